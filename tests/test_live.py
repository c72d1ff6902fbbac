"""The live loop without a network: a file played as a camera (``--live``), segments with one key file each."""
from __future__ import annotations

import json

import av

from difp_stream.cli import main
from difp_stream.keys import KeyReader, generate, load_secret
from tests.clips import make_clip


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
