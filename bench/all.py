"""Every figure in docs/benchmarks.md, from a fresh install, in one command (about 40 minutes on the 2-core CPU here):

    pip install -e ".[bench]" && python bench/all.py

1. the default model on the shared eval split (bench/style_report.py --limit 100: style_model.md/json,
   style_model_grid.png, style_model_inframe.png);
2. the generator's renders and the style encoder on each runtime (bench/generator.py: generator.md/json);
3. latency, privacy, flicker and deface side by side on a generated 640x480 clip and on two shared clips
   (bench/latency.py: latency*.md/json, *_strip.png, *_stages.png), and with --render-every 1;
4. the pipeline on every shared clip: fail-closed share, one fake person per track, flicker (bench/clips.py:
   clips.md/json, clips_strip_*.png);
5. live RTSP latency (bench/rtsp_latency.py: rtsp.md/json; needs the GStreamer RTSP server);
6. recovery round trips on clips in each recovery mode, with key sizes (bench/recovery.py: recovery.md/json);
7. dlib's recognizer with either face box on the eval split (bench/recognizer.py: recognizer.md/json);
8. expression: mouth, smile and eye opening of the original and the output by dlib's 68 points on every shared clip
   (bench/expression.py: expression.md/json, expression_strip_*.png);
9. the cover of every face on 100 eval photos: blurred share and why, protection, gender and age kept with either
   --attributes, whole-picture recovery (bench/cover.py: cover.md/json);
10. recall of faces cut by the frame's edge and of turned faces by yaw (bench/edge_recall.py --yaw 60:
    edge_recall.md/json).
Steps whose data is missing (../shared) are skipped with a line saying so."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CLIP = SHARED / "videos" / "liveportrait_d12.mp4"
DIM = SHARED / "videos" / "liveportrait_d20.mp4"

STEPS = [
    ("model report", ["bench/style_report.py", "--limit", "100"], SHARED / "faces" / "manifest.tsv"),
    ("generator", ["bench/generator.py", "--reps", "2"], SHARED / "faces" / "manifest.tsv"),
    ("latency, generated clip", ["bench/latency.py", "--deface"], None),
    ("latency per backend, generated clip", ["bench/latency.py", "--backend", "all", "--name", "latency_backends"],
     None),
    ("latency, generated clip, render every frame", ["bench/latency.py", "--render-every", "1", "--name",
                                                     "latency_render1"], None),
    ("latency, shared clip", ["bench/latency.py", "--clip", str(CLIP), "--deface", "--name",
                              "latency_liveportrait_d12"], CLIP),
    ("latency, dim shared clip", ["bench/latency.py", "--clip", str(DIM), "--deface", "--name",
                                  "latency_liveportrait_d20"], DIM),
    ("every shared clip", ["bench/clips.py"], SHARED / "videos"),
    ("expression on every shared clip", ["bench/expression.py"], SHARED / "videos"),
    ("RTSP latency", ["bench/rtsp_latency.py", "--seconds", "30"], None),
    ("recovery round trips", ["bench/recovery.py", "--modes", "diffusion,faithful (default),exact"], None),
    ("recognizer face box", ["bench/recognizer.py"], SHARED / "faces" / "manifest.tsv"),
    ("the cover of every face: blurs, protection, attributes, recovery", ["bench/cover.py"],
     SHARED / "faces" / "manifest.tsv"),
    ("recall of cut and turned faces", ["bench/edge_recall.py", "--yaw", "60"], SHARED / "faces" / "manifest.tsv"),
]


def main() -> int:
    t0, failed = time.time(), []
    for name, cmd, needs in STEPS:
        if needs is not None and not needs.exists():
            print(f"-- {name}: skipped ({needs} not found)")
            continue
        t = time.time()
        print(f"-- {name}: python {' '.join(cmd)}", flush=True)
        r = subprocess.run([sys.executable, *cmd], cwd=ROOT, capture_output=True, text=True)
        if r.returncode != 0:
            failed.append(name)
            print(r.stdout[-2000:], r.stderr[-2000:])
        print(f"   {'done' if r.returncode == 0 else 'FAILED'} in {time.time() - t:.0f} s", flush=True)
    print(f"all figures in bench/results/ ({time.time() - t0:.0f} s)" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
