import numpy as np
import pytest

from difp_stream.difp import Protector, load_default
from difp_stream.difp.config import ModelConfig


def test_shipped_weights_load_and_protect_a_face():
    model = load_default()
    assert model.is_trained
    r = model.cfg.resolution
    assert r >= 64
    from difp_stream.video.synthetic import astronaut
    from difp_stream.faces import align
    from difp_stream.faces.detect import Detector
    import cv2

    img = astronaut()
    face = Detector().detect([img])[0][0]
    crop = cv2.resize(align.crop(img, align.similarity(face.landmarks, 128), 128), (r, r), interpolation=cv2.INTER_AREA)
    p = Protector(model, model.cfg.sampling_config(), device="cpu")
    ids = np.zeros((1, model.cfg.id_dim), np.float32) + model.id_mean.numpy()
    out = p.protect(crop[None], seeds=1, id_codes=ids)
    assert out.crops.shape == (1, r, r, 3)
    assert 20 < out.crops.mean() < 235 and out.crops.std() > 10  # an image, not a blank
    rec = p.recover(out.keys)[0]
    mse = np.mean((rec.astype(float) - crop.astype(float)) ** 2)
    assert 10 * np.log10(255**2 / mse) > 22  # the trained VAE reconstructs the face


def test_model_recommended_sampling_overrides_paper_defaults():
    cfg = ModelConfig(sampling={"s_id": 5.0, "strength": 1.0, "unknown": 1})
    s = cfg.sampling_config(steps=2, g_rea=None)
    assert (s.s_id, s.strength, s.steps, s.g_rea) == (5.0, 1.0, 2, 0.6)


def test_shipped_fast_model_is_a_distilled_default():
    """The shipped fast model shares the default's VAE and conditions (its keys are the same kind), runs a smaller
    U-Net once per guided step, renders faces with its small decoder, and its keys recover the face."""
    import cv2
    import torch

    from difp_stream.difp import load_model
    from difp_stream.difp.models import param_count
    from difp_stream.faces import align
    from difp_stream.faces.detect import Detector
    from difp_stream.video.synthetic import astronaut

    fast, full = load_model("fast"), load_default()
    assert fast.is_trained and fast.cfg.distilled and fast.fast_dec is not None
    assert param_count(fast.unet) < 0.6 * param_count(full.unet)
    for name in ("vae.encoder.conv_in.weight", "vae.decoder.conv_out.weight", "style_enc.head.weight", "id_mean"):
        assert torch.equal(fast.state_dict()[name], full.state_dict()[name])
    r = fast.cfg.resolution
    img = astronaut()
    face = Detector().detect([img])[0][0]
    crop = cv2.resize(align.crop(img, align.similarity(face.landmarks, 128), 128), (r, r), interpolation=cv2.INTER_AREA)
    ids = fast.id_mean.numpy()[None].copy()
    a = Protector(fast, device="cpu").protect(crop[None], seeds=1, id_codes=ids)
    b = Protector(full, device="cpu").protect(crop[None], seeds=1, id_codes=ids)
    assert a.crops.shape == (1, r, r, 3) and a.crops.std() > 10
    psnr = lambda x, y: 10 * np.log10(255**2 / np.mean((x.astype(float) - y.astype(float)) ** 2))  # noqa: E731
    assert psnr(a.crops[0], crop) < 25  # the face was replaced
    assert psnr(Protector(fast, device="cpu").recover(a.keys)[0], crop) > 22
    assert psnr(a.crops[0], b.crops[0]) > 15  # the student follows its teacher to a similar picture


def test_cli_fast_model_protects_and_recover_finds_it(tmp_path, capsys):
    """`--model fast` end to end on an image; `recover` finds the shipped model that made the keys by itself;
    settings a distilled model cannot serve are a usage error."""
    import cv2

    from difp_stream.benchmark import faces_leaked
    from difp_stream.cli import main
    from difp_stream.video.synthetic import astronaut

    img = astronaut()
    src, out, back = tmp_path / "a.png", tmp_path / "a_out.png", tmp_path / "a_back.png"
    cv2.imwrite(str(src), img[:, :, ::-1])
    with pytest.raises(SystemExit) as e:  # like any usage error (argparse's too): exit code 2
        main([str(src), str(tmp_path / "x.png"), "--model", "fast", "--s-id", "3"])
    assert e.value.code == 2
    assert "distilled for fixed sampling settings" in capsys.readouterr().err
    for bad, why in ((["--inversion-steps", "3"], "use a divisor of 4"), (["--start-noise", "1.5"], "--start-noise: 1.5 is out of range")):
        with pytest.raises(SystemExit) as e:
            main([str(src), str(tmp_path / "x.png"), "--model", "fast", *bad])
        assert e.value.code == 2 and why in capsys.readouterr().err
    assert main([str(src), str(out), "--model", "fast"]) == 0
    prot = cv2.imread(str(out))[:, :, ::-1]
    assert prot.shape == img.shape and faces_leaked([img], [prot]) == (0, 1)  # one face checked, not leaked
    keys, secret = str(out) + ".difpkeys", str(out) + ".difpkeys.secret"
    assert main(["recover", str(out), str(back), "--keys", keys, "--identity", secret]) == 0
    rec = cv2.imread(str(back))[:, :, ::-1]
    err = lambda a: np.mean((a.astype(float) - img.astype(float)) ** 2)  # noqa: E731
    # images' keys restore the face at 256 px (the correction's latent is 4x the model's 16x16): the face comes back
    # sharp (measured: 2.0% of the protected image's error; 5.9% with 64 px keys)
    from difp_stream.keys import KeyReader, load_secret

    assert next(KeyReader(keys, load_secret(secret)).records()).key.correction.shape == (8, 64, 64)
    assert err(rec) < 0.03 * err(prot)
