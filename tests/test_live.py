"""The live loop without a network: a file played as a camera (``--live``), segments with one key file each."""
from __future__ import annotations

import json

import av

from difp_stream.cli import main
from difp_stream.keys import KeyReader, generate, load_secret
from difp_stream.video.synthetic import make_clip


def test_file_as_camera_into_segments_with_keys(tmp_path):
    clip = make_clip(tmp_path / "cam.mp4", frames=36, fps=12, audio=False)
    secret, pub = generate(tmp_path / "auditor")
    out = tmp_path / "out"
    out.mkdir()
    rc = main([str(clip), str(out / "seg_%H%M%S.mp4"), "--live", "--segment-seconds", "1.2", "--recipient", str(pub),
               "--stats-every", "0", "--stats-json", str(tmp_path / "stats.jsonl"), "--no-progress"])
    assert rc == 0
    final = json.loads((tmp_path / "stats.jsonl").read_text().splitlines()[-1])
    segments = sorted(out.glob("seg_*.mp4"))
    assert len(segments) >= 2 and not list(out.glob(".*partial*"))
    total = 0
    for seg in segments:
        with av.open(str(seg)) as c:
            n = sum(1 for _ in c.decode(video=0))
            tag = c.metadata["difp_stream_id"]
        total += n
        reader = KeyReader(seg.with_name(seg.name + ".difpkeys"), load_secret(secret))
        assert reader.header["stream_id"] == tag  # each segment has its own key file
        assert all(0 <= r.frame_index < n for r in reader.records())
    assert total == final["frames_out"] == final["frames_in"] - final["dropped"]
    assert final["frames_in"] == 36 and final["faces"] >= 0.8 * final["frames_out"]  # drops vary with load
    # an authorized replay of one segment works like any protected video
    seg = segments[0]
    rc = main(["recover", str(seg), str(tmp_path / "back.mp4"), "--keys", str(seg) + ".difpkeys",
               "--identity", str(secret), "--no-progress"])
    assert rc == 0


def test_live_refuses_two_file_outputs(tmp_path, capsys):
    clip = make_clip(tmp_path / "cam.mp4", frames=4, audio=False)
    rc = main([str(clip), str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4"), "--live", "--no-keys"])
    assert rc == 4 and "one file" in capsys.readouterr().err


def test_file_sink_keeps_every_frame_and_arrival_times(tmp_path):
    """Irregular arrivals (a live feed with drops) -> every frame in the MP4, the last one too, at its arrival time."""
    from fractions import Fraction

    import numpy as np

    from difp_stream.video.sinks import FileSink

    arrivals = [0.0, 0.04, 0.041, 0.3, 0.34, 1.5, 1.54, 1.58]
    sink = FileSink(str(tmp_path / "out.mp4"), Fraction(25), (64, 48))
    for i, t in enumerate(arrivals):
        sink.write(np.full((48, 64, 3), 30 * i, np.uint8), 100.0 + t)
    sink.close()
    with av.open(str(tmp_path / "out.mp4")) as c:
        times = [f.time for f in c.decode(video=0)]
    assert len(times) == len(arrivals)
    assert np.allclose(times, arrivals, atol=0.002)


def test_rtp_clock_is_not_taken_for_a_frame_rate():
    from fractions import Fraction
    from types import SimpleNamespace

    from difp_stream.video.source import _stream_fps

    assert _stream_fps(SimpleNamespace(average_rate=Fraction(90000), guessed_rate=None)) == 25
    assert _stream_fps(SimpleNamespace(average_rate=None, guessed_rate=Fraction(30000, 1001))) == Fraction(30000, 1001)
    assert _stream_fps(SimpleNamespace(average_rate=Fraction(12), guessed_rate=Fraction(90000))) == 12
