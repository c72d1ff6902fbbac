import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from difp_stream.cli import main
from difp_stream.video.io import count_frames, probe
from difp_stream.video.synthetic import astronaut, make_clip
from difp_stream.metrics import faces_leaked as _leaks


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("clips") / "face.mp4", frames=24)


def run(*args) -> int:
    return main([str(a) for a in args] + ["--no-progress"])


def _frames(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def faces_leaked(original_frames, protected_frames, every=1) -> int:
    return _leaks(original_frames, protected_frames, every)[0]


def test_video_keeps_frames_timing_audio_and_covers_faces(tmp_path, clip, model_dir):
    out = tmp_path / "out.mp4"
    assert run(clip, out, "--model", model_dir, "--seed", 3) == 0
    a, b = probe(clip), probe(out)
    assert (b.width, b.height, b.fps) == (a.width, a.height, a.fps)
    assert count_frames(out) == count_frames(clip)
    assert abs(b.duration - a.duration) <= 1 / float(a.fps) + 1e-6
    assert b.audio_streams == 1 and b.codec == "h264"
    with av.open(str(out)) as c:
        assert c.streams.audio[0].codec_context.name == "aac"
    fa, fb = _frames(clip), _frames(out)
    assert faces_leaked(fa, fb) == 0
    # the face changed, the background did not
    assert np.abs(fa[0][:, :30].astype(int) - fb[0][:, :30].astype(int)).mean() < 4
    # partial files never stay behind; the keys and (no --recipient) a fresh key pair sit beside the output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", "out.mp4.difpkeys", "out.mp4.difpkeys.secret",
                                                          "out.mp4.difpkeys.secret.pub"]


def test_same_seed_is_reproducible(tmp_path, clip, model_dir, monkeypatch):
    """The same seed gives the same protected frames, bit for bit, as handed to the encoder (x264 itself was seen to
    encode identical frames slightly differently under load: 45 dB apart); another seed gives another face."""
    import difp_stream.video.io as vio

    handed: dict[str, list] = {}
    real = vio.av.VideoFrame.from_ndarray

    def keep(arr, format):
        handed.setdefault(name, []).append(arr.copy())
        return real(arr, format=format)
    monkeypatch.setattr(vio.av.VideoFrame, "from_ndarray", keep)
    for name, seed in (("a.mp4", 5), ("b.mp4", 5), ("c.mp4", 6)):
        assert run(clip, tmp_path / name, "--model", model_dir, "--seed", seed, "--no-keys") == 0
    assert len(handed["a.mp4"]) == 24 and all(np.array_equal(x, y) for x, y in zip(handed["a.mp4"], handed["b.mp4"]))
    assert not all(np.array_equal(x, y) for x, y in zip(handed["a.mp4"], handed["c.mp4"]))
    fa, fb = _frames(tmp_path / "a.mp4"), _frames(tmp_path / "b.mp4")
    assert min(10 * np.log10(255**2 / max(np.mean((x.astype(float) - y) ** 2), 1e-9)) for x, y in zip(fa, fb)) > 40


def test_rotated_phone_video_keeps_rotation(tmp_path, model_dir):
    src = make_clip(tmp_path / "rot.mp4", frames=8, size=(240, 320), rotation=90, audio=False)
    out = tmp_path / "out.mp4"
    assert run(src, out, "--model", model_dir) == 0
    a, b = probe(src), probe(out)
    assert b.rotation == a.rotation == 90 and (b.width, b.height) == (a.width, a.height)
    assert count_frames(out) == 8


def test_odd_size_and_no_faces_is_a_clean_copy(tmp_path, model_dir):
    src = tmp_path / "plain.mp4"
    c = av.open(str(src), "w")
    v = c.add_stream("libx264", rate=10)
    v.width, v.height, v.pix_fmt = 161, 121, "yuv444p"
    yy, xx = np.mgrid[0:121, 0:161]
    for i in range(10):
        img = np.stack([(xx + i * 3) % 256, yy * 2 % 256, np.full_like(xx, 90)], -1).astype(np.uint8)
        for p in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            c.mux(p)
    for p in v.encode(None):
        c.mux(p)
    c.close()
    out = tmp_path / "out.mp4"
    assert run(src, out, "--model", model_dir) == 0
    assert (probe(out).width, probe(out).height) == (161, 121)
    fa, fb = _frames(src), _frames(out)
    assert len(fa) == len(fb) == 10
    assert max(np.abs(x.astype(int) - y.astype(int)).mean() for x, y in zip(fa, fb)) < 3


def test_bad_inputs_and_outputs(tmp_path, clip, model_dir, capsys):
    assert run(tmp_path / "missing.mp4", tmp_path / "o.mp4", "--model", model_dir) == 3
    assert "input not found" in capsys.readouterr().err
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    assert run(junk, tmp_path / "o.mp4", "--model", model_dir) == 3
    assert "cannot open" in capsys.readouterr().err
    # audio only: no video stream
    audio = tmp_path / "tone.m4a"
    c = av.open(str(audio), "w")
    s = c.add_stream("aac", rate=16000)
    s.layout = "mono"
    fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
    fr.sample_rate, fr.pts = 16000, 0
    for p in list(s.encode(fr)) + list(s.encode(None)):
        c.mux(p)
    c.close()
    assert run(audio, tmp_path / "o.mp4", "--model", model_dir) == 3
    assert "no video stream" in capsys.readouterr().err
    existing = tmp_path / "exists.mp4"
    existing.write_bytes(b"keep me")
    assert run(clip, existing, "--model", model_dir) == 4
    assert "--overwrite" in capsys.readouterr().err and existing.read_bytes() == b"keep me"
    assert run(clip, clip, "--model", model_dir, "--overwrite") == 4
    assert "never writes over its input" in capsys.readouterr().err
    assert run(clip, tmp_path / "nodir" / "o.mp4", "--model", model_dir) == 4
    # failed runs leave nothing behind: no output, no key file, no key pair
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.mp4", "junk.mp4", "tone.m4a"]
    with pytest.raises(SystemExit) as e:
        main([str(clip)])
    assert e.value.code == 2


def test_truncated_input_keeps_what_decodes(tmp_path, model_dir, capsys):
    src = make_clip(tmp_path / "long.mp4", frames=36, audio=False)
    data = src.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    out = tmp_path / "out.mp4"
    code = run(cut, out, "--model", model_dir)
    if code == 0:
        assert 0 < count_frames(out) < 36
    else:  # the container index is gone: a clear error, nothing half-written
        assert code == 3 and not out.exists()
        assert "error" in capsys.readouterr().err


def test_fail_closed_when_protection_fails(tmp_path, clip, model_dir, monkeypatch):
    from difp_stream.difp import Protector

    def broken(self, *a, **k):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(Protector, "protect", broken)
    out = tmp_path / "out.mp4"
    assert run(clip, out, "--model", model_dir) == 0
    fa, fb = _frames(clip), _frames(out)
    assert faces_leaked(fa, fb) == 0
    from difp_stream.faces.detect import Detector

    det = Detector().detect([fa[0]])[0][0]
    x0, y0, x1, y1 = det.box.astype(int)
    assert np.abs(fb[0][y0:y1, x0:x1].astype(int) - fa[0][y0:y1, x0:x1].astype(int)).mean() > 15


def test_similarity_skip_reuses_the_result_of_a_still_face(model_dir):
    from difp_stream.difp import DIFPModel, Protector
    from difp_stream.difp.identity import DlibIdentityEncoder
    from difp_stream.pipeline import FaceProtector, PipelineConfig

    img = cv2.resize(astronaut(), (320, 320), interpolation=cv2.INTER_AREA)
    p = Protector(DIFPModel.load(model_dir), device="cpu")
    records = []
    fp = FaceProtector(p, DlibIdentityEncoder(), PipelineConfig(keys=True), on_key=records.append)
    outs = [fp.process(i, img) for i in range(6)]
    assert fp.stats.skipped == 5 and len(fp.timings.ms["difp"]) == 1 and "carry" not in fp.timings.ms
    assert all(np.array_equal(outs[0], o) for o in outs[1:]) and faces_leaked([img], [outs[-1]]) == 0
    assert sorted(r.frame_index for r in records) == list(range(6))  # every frame keeps its recovery key
    off = FaceProtector(p, DlibIdentityEncoder(), PipelineConfig(keys=True, skip_below=0))
    for i in range(6):
        off.process(i, img)
    assert off.stats.skipped == 0 and len(off.timings.ms["carry"]) == 4


def test_fake_identity_too_close_to_the_original_is_drawn_again(model_dir):
    from difp_stream.difp import DIFPModel, Protector
    from difp_stream.difp.identity import DlibIdentityEncoder
    from difp_stream.pipeline import FaceProtector, PipelineConfig

    img = cv2.resize(astronaut(), (320, 320), interpolation=cv2.INTER_AREA)
    p = Protector(DIFPModel.load(model_dir), device="cpu")
    real = DlibIdentityEncoder()
    fp = FaceProtector(p, real, PipelineConfig(verify_distance=0.1))  # far enough at once: no redraw
    fp.process(0, img)
    assert fp.stats.redrawn == 0 and len(fp.timings.ms["verify"]) == 1
    # an encoder that sees the same person everywhere makes every fake face "too close": two more draws, and as
    # none is far enough, the face is covered by the blur (fail closed)
    same = FaceProtector(p, lambda crops: np.zeros((len(crops), 128), np.float32), PipelineConfig())
    out = same.process(0, img)
    assert same.stats.redrawn == 2 and len(same.timings.ms["difp"]) == 3
    assert same.stats.protected == 0 and same.stats.obscured == 1
    assert faces_leaked([img], [out]) == 0
    off = FaceProtector(p, real, PipelineConfig(verify_distance=0))
    off.process(0, img)
    assert "verify" not in off.timings.ms


def test_every_keyframe_is_checked_against_each_view_of_the_person(model_dir):
    """verify_every (the default): a later keyframe's view of the person joins the track's identity codes; a fake face that view
    matches is drawn again, then blurred (fail closed). Without it, only a track's first keyframe is checked."""
    from difp_stream.difp import DIFPModel, Protector
    from difp_stream.pipeline import FaceProtector, PipelineConfig

    img = cv2.resize(astronaut(), (320, 320), interpolation=cv2.INTER_AREA)
    p = Protector(DIFPModel.load(model_dir), device="cpu")

    def encoder():  # the track's first view is far from every fake face; every later view looks like them
        calls = []

        def enc(crops):
            calls.append(len(crops))
            return np.full((len(crops), 128), 1.0 if len(calls) == 1 else 0.0, np.float32)
        return enc
    cfg = dict(protect_every=4, skip_below=0)
    every = FaceProtector(p, encoder(), PipelineConfig(verify_every=True, **cfg))
    first = FaceProtector(p, encoder(), PipelineConfig(verify_every=False, **cfg))
    for i in range(5):  # keyframes at 0 and 4
        every.process(i, img)
        first.process(i, img)
    assert first.stats.redrawn == 0 and first.stats.obscured == 0 and first.stats.protected == 5
    assert every.stats.redrawn == 2 and every.stats.obscured == 1 and every.stats.protected == 4
    assert len(every.states[next(iter(every.states))].seen_codes) == 1


def test_ctrl_c_leaves_a_playable_output(tmp_path, clip, model_dir, monkeypatch):
    from difp_stream.pipeline import FaceProtector

    real = FaceProtector.process

    def interrupting(self, index, frame):
        if index == 6:
            raise KeyboardInterrupt
        return real(self, index, frame)

    monkeypatch.setattr(FaceProtector, "process", interrupting)
    out = tmp_path / "out.mp4"
    assert run(clip, out, "--model", model_dir) == 130
    assert count_frames(out) == 6


def test_image_and_folder(tmp_path, model_dir):
    img = astronaut()
    d = tmp_path / "in"
    d.mkdir()
    cv2.imwrite(str(d / "a.jpg"), img[:, :, ::-1])
    cv2.imwrite(str(d / "b.png"), img[::-1, :, ::-1])
    assert run(d / "a.jpg", tmp_path / "a_out.jpg", "--model", model_dir) == 0
    out = cv2.imread(str(tmp_path / "a_out.jpg"))[:, :, ::-1]
    assert out.shape == img.shape and faces_leaked([img], [out]) == 0
    assert run(d, tmp_path / "out", "--model", model_dir) == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert [n for n in names if not n.startswith("images.")] == ["a.jpg", "a.jpg.difpkeys", "b.png",
                                                                 "b.png.difpkeys"]
    assert run(d, tmp_path / "out", "--model", model_dir) == 4  # files exist


def test_console_script_and_cli_py(tmp_path):
    r = subprocess.run([sys.executable, "cli.py", "--help"], cwd=Path(__file__).parents[1], capture_output=True,
                       text=True)
    assert r.returncode == 0 and "difp-stream" in r.stdout and "--seed" in r.stdout
