"""Every figure in README, from a fresh install, in one command (about 22 minutes on the 2-core CPU here):

    pip install -e ".[bench]" && python bench/all.py

1. the model report on the shared eval split (bench/model_report.py --limit 200: model.md/json, model_grid.png), and
   the same for the distilled fast model (model_fast.md/json, model_fast_grid.png);
2. latency, privacy and deface side by side on a generated 640x480 clip and on a shared clip (bench/latency.py:
   latency*.md/json, *_strip.png, *_stages.png; latency_fast: the same with --model fast);
3. per-face latency of each shipped model on each runtime backend (bench/backends.py: backends.md/json);
4. live RTSP latency (bench/rtsp_latency.py: rtsp.md/json; needs the GStreamer RTSP server);
5. recovery round trips on clips, diffusion and exact mode (bench/recovery.py: recovery.md/json);
6. dlib's recognizer with either face box on the eval split (bench/recognizer.py: recognizer.md/json).
Steps whose data is missing (../shared) are skipped with a line saying so."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CLIP = SHARED / "videos" / "liveportrait_d12.mp4"

STEPS = [
    ("model report", ["bench/model_report.py", "--limit", "200", "--key-refine", "12"], SHARED / "faces" / "manifest.tsv"),
    ("model report, fast model", ["bench/model_report.py", "--model", "fast", "--limit", "200", "--name", "model_fast"],
     SHARED / "faces" / "manifest.tsv"),
    ("latency, generated clip", ["bench/latency.py", "--deface", "--backend", "all"], None),
    ("latency, generated clip, fast model", ["bench/latency.py", "--model", "fast", "--name", "latency_fast"], None),
    ("latency, shared clip", ["bench/latency.py", "--clip", str(CLIP), "--deface", "--name",
                              "latency_liveportrait_d12"], CLIP),
    ("backends", ["bench/backends.py"], None),
    ("RTSP latency", ["bench/rtsp_latency.py", "--seconds", "30"], None),
    ("recovery round trips", ["bench/recovery.py"], None),
    ("recognizer face box", ["bench/recognizer.py"], SHARED / "faces" / "manifest.tsv"),
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
