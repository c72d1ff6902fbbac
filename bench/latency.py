"""Latency per stage and end-to-end speed of `difp-stream` on a clip, optionally side by side with deface.

    python bench/latency.py                      # a generated 640x480 25 fps clip with one face (100 frames)
    python bench/latency.py --clip ../shared/data/videos/liveportrait_d12.mp4 --deface

Prints p50/p95 per stage (ms), end-to-end fps, real-time factor and peak RSS; writes JSON + Markdown to
bench/results/ (``--name``)."""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import RESULTS, faces_leaked, machine  # noqa: E402
from difp_stream.difp import DIFPModel, Protector, load_default  # noqa: E402
from difp_stream.difp.identity import DlibIdentityEncoder  # noqa: E402
from difp_stream.pipeline import FaceProtector, PipelineConfig  # noqa: E402
from difp_stream.runtime import select  # noqa: E402


def generated_clip(path: Path, frames: int = 100) -> Path:
    from tests.clips import make_clip

    return make_clip(path, frames=frames, size=(640, 480), fps=25, audio=True)


def pct(v: list[float]) -> tuple[float, float]:
    return (float(np.percentile(v, 50)), float(np.percentile(v, 95))) if v else (0.0, 0.0)


def run_difp(clip: Path, model, args) -> dict:
    with av.open(str(clip)) as c:
        s = c.streams.video[0]
        fps = float(s.average_rate)
        t = time.perf_counter()
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(s)][: args.frames or None]
        decode_ms = (time.perf_counter() - t) * 1000 / max(1, len(frames))
    backend, used = select(args.backend, model, "cpu")
    p = Protector(model, model.cfg.sampling_config(steps=args.steps), device="cpu", backend=backend)
    cfg = PipelineConfig(keys=not args.no_keys, protect_every=args.protect_every, detect_every=args.detect_every)
    fp = FaceProtector(p, DlibIdentityEncoder(), cfg)
    fp.process(0, frames[0])  # warm-up (first track: identity code, allocations)
    fp = FaceProtector(p, DlibIdentityEncoder(), cfg)
    per_frame, outs = [], []
    for i, f in enumerate(frames):
        t = time.perf_counter()
        outs.append(fp.process(i, f))
        per_frame.append((time.perf_counter() - t) * 1000)
    tmp = Path(tempfile.mkdtemp()) / "o.mp4"
    with av.open(str(tmp), "w") as o:
        v = o.add_stream("libx264", rate=int(round(fps)))
        v.width, v.height, v.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        v.options = {"crf": "18", "preset": "veryfast"}
        t = time.perf_counter()
        for f in outs:
            for pk in v.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                o.mux(pk)
        for pk in v.encode(None):
            o.mux(pk)
        encode_ms = (time.perf_counter() - t) * 1000 / len(outs)
    shutil.rmtree(tmp.parent)
    stages = {"decode": [decode_ms]}
    stages.update({k: v for k, v in fp.timings.ms.items()})
    stages["encode"] = [encode_ms]
    total = decode_ms + float(np.mean(per_frame)) + encode_ms
    leaks, checked = faces_leaked(frames, outs, every=args.leak_every)
    return {"frames": len(frames), "clip_fps": fps, "size": f"{frames[0].shape[1]}x{frames[0].shape[0]}",
            "stages_ms": {k: {"p50": pct(v)[0], "p95": pct(v)[1], "n": len(v)} for k, v in stages.items()},
            "process_ms": {"p50": pct(per_frame)[0], "p95": pct(per_frame)[1], "mean": float(np.mean(per_frame))},
            "fps": 1000 / total, "realtime_factor": (1000 / total) / fps, "faces": fp.stats.faces,
            "carried": fp.stats.carried, "leaks": leaks, "faces_checked": checked}


def run_deface(clip: Path, args) -> dict | None:
    exe = shutil.which("deface") or shutil.which("deface", path=str(Path(sys.executable).parent))
    if not exe:
        print("deface is not installed (pip install deface); skipping the side-by-side", file=sys.stderr)
        return None
    out = Path(tempfile.mkdtemp()) / "deface.mp4"
    t = time.perf_counter()
    subprocess.run([exe, str(clip), "-o", str(out), "--keep-audio"], check=True, capture_output=True)
    secs = time.perf_counter() - t
    with av.open(str(clip)) as a, av.open(str(out)) as b:
        fa = [f.to_ndarray(format="rgb24") for f in a.decode(video=0)][: args.frames or None]
        fb = [f.to_ndarray(format="rgb24") for f in b.decode(video=0)][: args.frames or None]
    n = len([1 for _ in av.open(str(clip)).decode(video=0)])
    leaks, checked = faces_leaked(fa, fb, every=args.leak_every)
    from difp_stream.faces.detect import Detector

    det = Detector(threshold=0.5)
    util = float(np.mean([bool(det.detect([f])[0]) for f in fb[:: args.leak_every]]))
    shutil.rmtree(out.parent)
    return {"fps": n / secs, "leaks": leaks, "faces_checked": checked, "frames_with_detectable_face": util}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", default=None, help="video to measure (default: a generated 640x480 clip)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--frames", type=int, default=100, help="frames to process (0: all)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--protect-every", type=int, default=PipelineConfig().protect_every)
    ap.add_argument("--detect-every", type=int, default=1)
    ap.add_argument("--no-keys", action="store_true")
    ap.add_argument("--backend", default="auto", help="auto, torch, onnxruntime (default: auto)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--deface", action="store_true", help="also run deface on the same clip")
    ap.add_argument("--leak-every", type=int, default=5, help="check identity leaks on every Nth frame")
    ap.add_argument("--name", default="latency")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tmpdir = Path(tempfile.mkdtemp())
    clip = Path(args.clip) if args.clip else generated_clip(tmpdir / "clip.mp4", args.frames or 100)
    model = DIFPModel.load(args.model) if args.model else load_default()
    r = {"clip": str(args.clip or "generated 640x480 astronaut clip"), "machine": machine(),
         "torch_threads": torch.get_num_threads(), "settings": {k: getattr(args, k) for k in
                                                                ("steps", "protect_every", "detect_every", "no_keys",
                                                                 "backend")},
         "difp": run_difp(clip, model, args)}
    if args.deface:
        r["deface"] = run_deface(clip, args)
        if r["deface"]:
            r["fps_ratio_difp_over_deface"] = r["difp"]["fps"] / r["deface"]["fps"]
    r["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    shutil.rmtree(tmpdir, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(r, indent=2))
    d = r["difp"]
    lines = [f"# Latency: {r['clip']} ({d['size']}, {d['frames']} frames)", "",
             f"`python bench/latency.py {' '.join(sys.argv[1:])}` on {r['machine']}, torch threads "
             f"{r['torch_threads']}; backend {args.backend}; steps {args.steps or 'default'}, protect-every {args.protect_every}, keys "
             f"{'off' if args.no_keys else 'on'}.", "", "| stage | p50 ms | p95 ms | calls |", "| --- | --- | --- | --- |"]
    for k, v in d["stages_ms"].items():
        lines.append(f"| {k} | {v['p50']:.1f} | {v['p95']:.1f} | {v['n']} |")
    lines += ["", f"- per frame (detect → blend): p50 {d['process_ms']['p50']:.1f} ms, p95 {d['process_ms']['p95']:.1f} ms",
              f"- end to end: **{d['fps']:.2f} fps**, real-time factor {d['realtime_factor']:.2f} at {d['clip_fps']:.2f} fps",
              f"- faces covered {d['faces']} (carried {d['carried']}); identity leaks {d['leaks']} of {d['faces_checked']} "
              "checked faces", f"- peak RSS {r['peak_rss_mb']:.0f} MB"]
    if r.get("deface"):
        df = r["deface"]
        lines += [f"- deface on the same clip: {df['fps']:.2f} fps (whole command, CenterFace + blur + encode); "
                  f"difp-stream / deface = {r['fps_ratio_difp_over_deface']:.2f}; deface leaks {df['leaks']} of "
                  f"{df['faces_checked']}; frames where a face is still detectable after deface "
                  f"{df['frames_with_detectable_face']:.0%}"]
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
