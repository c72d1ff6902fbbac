"""Live RTSP latency: a simulated camera (generated face clip, H.264, real time) published to a local RTSP relay, the
filter reading it as a user runs it (``difp-stream rtsp://... out.mp4``), its stats read back.

    python bench/rtsp_latency.py                 # 640x480 at 25 fps for 30 s, default budget (500 ms)
    python bench/rtsp_latency.py --seconds 60 --max-latency-ms 300

Reports added latency p50/p95 (frame decoded -> frame written), input/output fps, the share of face-frames covered
by the fast path (a track's last protected face, or a blur) and of frames dropped from the full queue; writes
bench/results/rtsp.json + .md. Needs the GStreamer RTSP server (see tests/rtsp_relay.py)."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import RESULTS, machine  # noqa: E402
from tests.rtsp import Publisher, Relay, relay_available  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--max-latency-ms", type=float, default=500)
    ap.add_argument("--name", default="rtsp")
    ap.add_argument("extra", nargs="*", help="more difp-stream options (after --)")
    a = ap.parse_args()
    why = relay_available()
    if why:
        print(f"skipped: {why}")
        return 0
    w, h = map(int, a.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp, Relay(["cam"]) as relay:
        camera = Publisher(relay.url("cam", publish=True), a.seconds + 60, a.fps, (w, h)).start()
        stats = Path(tmp) / "stats.jsonl"
        cmd = [sys.executable, "cli.py", relay.url("cam"), str(Path(tmp) / "out.mp4"), "--duration", str(a.seconds),
               "--max-latency-ms", str(a.max_latency_ms), "--stats-json", str(stats), "--no-progress", *a.extra]
        t = time.time()
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        camera.stop()
        if r.returncode != 0:
            print(r.stderr)
            return r.returncode
        final = json.loads(stats.read_text().splitlines()[-1])
    faces = max(1, final["faces"])
    res = {"machine": machine(), "stream": f"{w}x{h} @ {a.fps} fps, H.264 over RTSP/TCP (local relay)",
           "seconds": a.seconds, "max_latency_ms": a.max_latency_ms, "wall_s": round(time.time() - t, 1),
           "options": a.extra, **final,
           "fallback_share": round(final["fallback"] / faces, 3),
           "dropped_share": round(final["dropped"] / max(1, final["frames_in"]), 3)}
    (RESULTS / f"{a.name}.json").write_text(json.dumps(res, indent=2))
    md = [f"# Live RTSP latency ({res['stream']})", "",
          f"`python bench/rtsp_latency.py {' '.join(sys.argv[1:])}` on {res['machine']}; "
          f"{a.seconds:.0f} s of a simulated camera (one moving face), budget `--max-latency-ms {a.max_latency_ms:.0f}`.",
          "", "| figure | value |", "| --- | --- |",
          f"| input fps | {final['input_fps']:.1f} |", f"| output fps | {final['output_fps']:.1f} |",
          f"| added latency p50 / p95 | {final['latency_p50_ms']:.0f} / {final['latency_p95_ms']:.0f} ms |",
          f"| face-frames covered | {final['faces']} |",
          f"| of which DIFP-protected this frame | {final['protected']} |",
          f"| fast path (last protected face reused / blur) | {final['reused']} / {final['blurred']} "
          f"({100 * res['fallback_share']:.0f}%) |",
          f"| frames dropped from the full queue | {final['dropped']} of {final['frames_in']} "
          f"({100 * res['dropped_share']:.0f}%) |", ""]
    (RESULTS / f"{a.name}.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
