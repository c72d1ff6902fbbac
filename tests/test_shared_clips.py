"""`difp-stream in.mp4 out.mp4` on every shared clip: frame count, fps, duration, audio, every face covered."""
import av
import pytest

from bench.common import faces_leaked
from difp_stream.cli import main
from difp_stream.video.io import count_frames, probe
from tests.conftest import VIDEOS

CLIPS = sorted(VIDEOS.glob("*.mp4")) if VIDEOS.is_dir() else []


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_model):
    d = tmp_path_factory.mktemp("model")
    tiny_model.save(d)
    return d


KNOWN_LEAKS = {  # open in issue 4: small, turned faces in the moving crowd; measured 4 of 96 checked faces
    "facenet_pytorch_video": "a few small or half-turned crowd faces still match dlib at their place",
}


def _params():
    for c in CLIPS:
        marks = [pytest.mark.xfail(reason=KNOWN_LEAKS[c.stem], strict=False)] if c.stem in KNOWN_LEAKS else []
        yield pytest.param(c, id=c.stem, marks=marks)


@pytest.mark.skipif(not CLIPS, reason="shared clips not present")
@pytest.mark.parametrize("clip", list(_params()))
def test_shared_clip(tmp_path, clip, model_dir):
    out = tmp_path / "out.mp4"
    assert main([str(clip), str(out), "--model", str(model_dir), "--no-progress", "--no-keys"]) == 0
    a, b = probe(clip), probe(out)
    n_in, n_out = count_frames(clip), count_frames(out)
    assert abs(n_in - n_out) <= 1
    assert b.fps == a.fps and (b.width, b.height) == (a.width, a.height)
    assert abs(b.duration - a.duration) <= 1.5 / float(a.fps)
    assert b.audio_streams == a.audio_streams
    with av.open(str(clip)) as ca, av.open(str(out)) as cb:
        fa = [f.to_ndarray(format="rgb24") for f in ca.decode(video=0)]
        fb = [f.to_ndarray(format="rgb24") for f in cb.decode(video=0)]
    leaks, checked = faces_leaked(fa, fb, every=max(1, len(fa) // 12))
    assert checked > 0 and leaks == 0
