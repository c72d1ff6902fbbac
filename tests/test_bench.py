"""`difp-stream bench` on a generated clip: figures, JSON, Markdown."""
from __future__ import annotations

import json

import cv2
import pytest

from difp_stream.cli import main
from difp_stream.video.synthetic import make_clip


@pytest.mark.slow
def test_bench_command_writes_results_and_figures(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", frames=10, fps=10, audio=False)
    out = tmp_path / "res"
    assert main(["bench", str(clip), "--out", str(out), "--frames", "10", "--every", "3", "--no-deface",
                 "--backend", "all", "--no-progress"]) == 0
    r = json.loads((out / "bench.json").read_text())
    d = r["difp"]
    assert d["frames"] == 10 and d["faces"] >= 9 and d["fps"] > 0
    assert {"decode", "detect", "difp", "difp: vae encode", "difp: ddim inversion", "difp: guided denoising",
            "difp: vae decode", "blend", "encode"} <= set(d["stages_ms"])
    assert d["leaks"] == 0 and d["faces_checked"] >= 3
    assert d["identity_stability"]["tracks_checked"] >= 1
    assert d["flicker"]["pairs"] >= 8 and d["detail"]["faces"] >= 3 and d["detail"]["mid"] > 0.2  # a face, not a blur
    # the default (style-space) model's runtimes, each through the whole pipeline
    assert set(r["backends"]) == {"openvino", "onnxruntime", "torch"} and all(v["fps"] > 0 for v in r["backends"].values())
    strip = cv2.imread(str(out / "bench_strip.png"))
    assert strip.shape[0] == 300 and strip.shape[1] >= 3 * 300  # original | difp-stream | recovered
    assert "identity leaks" in (out / "bench.md").read_text()


def test_bench_missing_clip(tmp_path, capsys):
    assert main(["bench", str(tmp_path / "nope.mp4")]) == 3
    assert "input not found" in capsys.readouterr().err
