"""The shipped default: DIFP in the face generator's style space (weights/default), photoreal, end to end."""
import numpy as np
import pytest

from difp_stream.difp import Protector, load_default
from difp_stream.difp.config import ModelConfig


def test_shipped_default_is_photoreal_far_from_the_person_and_keyed():
    """The default model replaces the astronaut's face in the frame (pasted, colour and detail matched) by a face
    dlib puts beyond 0.6 of her, with the detail of a face (mid band) and without added noise (high band); two
    seeds give two people; its key brings the original's latent back."""
    from difp_stream.difp.identity import DlibIdentityEncoder
    from difp_stream.difp.protector import to_tensor
    from difp_stream.faces import align
    from difp_stream.metrics import band_ratios
    from difp_stream.pipeline import FaceProtector, PipelineConfig
    from difp_stream.video.synthetic import astronaut

    model = load_default()
    assert model.cfg.kind == "stylespace" and model.is_trained
    ids = DlibIdentityEncoder()
    p = Protector(model, device="cpu")  # PyTorch: the reference every runtime is checked against
    img = astronaut()
    outs, recs = [], []
    for seed in (0, 1):
        records = []
        fp = FaceProtector(p, ids, PipelineConfig(seed=seed, verify_distance=0.0, keys=True), on_key=records.append)
        outs.append(fp.process(0, img))
        recs += records
    (_, box, lms), = fp.last_faces
    m = align.similarity(lms, 128)
    orig, a, b = (align.crop(f, m, 128) for f in (img, *outs))
    e0, e1, e2 = ids(np.stack([orig, a, b]))
    assert np.linalg.norm(e1 - e0) > 0.6 and np.linalg.norm(e2 - e0) > 0.6  # protected
    assert np.linalg.norm(e1 - e2) > 0.4  # two seeds, two fake people
    mid, high = band_ratios(orig[24:124, 20:108], a[24:124, 20:108])
    assert 0.45 <= mid <= 1.5 and high <= 2.0, (mid, high)  # a face's detail (a blob: 0.05), not noise
    x0, y0, x1, y1 = (int(v) for v in box)
    outside = np.ones(img.shape[:2], bool)
    outside[max(0, y0 - 60):y1 + 60, max(0, x0 - 60):x1 + 60] = False
    assert np.array_equal(outs[0][outside], img[outside])  # nothing but the face region changes
    key = recs[0].key
    assert key.z_ts.shape == (23, 512)
    z0 = model.encode(to_tensor(align.crop(img, recs[0].transform, 128)[None], 128, "cpu"))
    assert float((p.recover_latents([key]) - z0).abs().max()) < 0.05  # the key restores the original's latent


def test_model_recommended_sampling_overrides_paper_defaults():
    cfg = ModelConfig(sampling={"s_id": 5.0, "strength": 1.0, "unknown": 1})
    s = cfg.sampling_config(steps=2, g_rea=None)
    assert (s.s_id, s.strength, s.steps, s.g_rea) == (5.0, 1.0, 2, 0.6)


def test_retired_fast_model_is_a_clear_error(tmp_path, capsys):
    from difp_stream.difp import load_model

    with pytest.raises(FileNotFoundError, match="retired"):
        load_model("fast")


def test_cli_default_protects_an_image_and_faithful_keys_bring_it_back(tmp_path):
    """`difp-stream a.png a_out.png` with the shipped model: the face is not leaked; `recover` restores it from the
    default (faithful) keys to within a small share of what protection changed."""
    import cv2

    from difp_stream.app.benchmark import faces_leaked
    from difp_stream.cli import main
    from difp_stream.keys import KeyReader, load_secret
    from difp_stream.video.synthetic import astronaut

    img = astronaut()
    src, out, back = tmp_path / "a.png", tmp_path / "a_out.png", tmp_path / "a_back.png"
    cv2.imwrite(str(src), img[:, :, ::-1])
    assert main([str(src), str(out)]) == 0
    prot = cv2.imread(str(out))[:, :, ::-1]
    assert prot.shape == img.shape and faces_leaked([img], [prot]) == (0, 1)  # one face checked, not leaked
    keys, secret = str(out) + ".difpkeys", str(out) + ".difpkeys.secret"
    rec = next(KeyReader(keys, load_secret(secret)).records())
    assert rec.exact is not None and bytes(rec.exact[1][:3]) == b"\xff\xd8\xff"  # faithful: the face region's JPEG
    assert main(["recover", str(out), str(back), "--keys", keys, "--identity", secret]) == 0
    restored = cv2.imread(str(back))[:, :, ::-1]
    err = lambda a: np.mean((a.astype(float) - img.astype(float)) ** 2)  # noqa: E731
    assert err(restored) < 0.03 * err(prot)


def test_export_writes_the_default_models_graphs(tmp_path):
    """`difp-stream export` for the default model: the encoder and the renders as ONNX graphs that ONNX Runtime
    runs (here the 128 px render only, to stay quick)."""
    import onnxruntime as ort

    from difp_stream.runtime.styles import export_graphs

    model = load_default()
    paths = export_graphs(model, tmp_path, sizes=(128,))
    assert [p.parent.name.split("-")[0] for p in paths] == ["encoder128", "gan128"]
    s = ort.InferenceSession(str(paths[1]), providers=["CPUExecutionProvider"])
    out = s.run(None, {"x": model.w_mean.numpy()[None].astype(np.float32)})[0]  # the mean style: the mean face
    assert out.shape == (1, 3, 128, 128) and np.isfinite(out).all() and out.std() > 0.05
