"""Latency per stage, end-to-end speed and privacy of `difp-stream` on a clip, side by side with deface.

    python bench/latency.py --deface             # a generated 640x480 25 fps clip with one face (100 frames)
    python bench/latency.py --clip ../shared/data/videos/liveportrait_d12.mp4 --deface --name latency_liveportrait_d12

Prints and writes bench/results/NAME.{json,md} plus NAME_strip.png (original | deface | difp-stream | recovered)
and NAME_stages.png (latency bars). The same as `difp-stream bench CLIP --out DIR`."""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import RESULTS  # noqa: E402
from difp_stream.app import benchmark  # noqa: E402
from difp_stream.difp import load_model  # noqa: E402
from difp_stream.pipeline import PipelineConfig  # noqa: E402


def generated_clip(path: Path, frames: int = 100) -> Path:
    from difp_stream.video.synthetic import make_clip

    return make_clip(path, frames=frames, size=(640, 480), fps=25, audio=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", default=None, help="video to measure (default: a generated 640x480 clip)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--frames", type=int, default=100, help="frames to process (0: all)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--protect-every", type=int, default=PipelineConfig().protect_every)
    ap.add_argument("--detect-every", type=int, default=1)
    ap.add_argument("--render-every", type=int, default=PipelineConfig().render_every)
    ap.add_argument("--no-keys", action="store_true")
    ap.add_argument("--backend", default="auto", help="auto, torch, onnxruntime, or all: each available (default: auto)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--deface", action="store_true", help="also run deface on the same clip")
    ap.add_argument("--leak-every", type=int, default=5, help="check identity leaks on every Nth frame")
    ap.add_argument("--name", default="latency")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tmpdir = Path(tempfile.mkdtemp())
    try:
        clip = Path(args.clip) if args.clip else generated_clip(tmpdir / "clip.mp4", args.frames or 100)
        model = load_model(args.model)
        benchmark.run(clip, RESULTS, args.name, model, frames=args.frames, deface=args.deface, backend=args.backend,
                      steps=args.steps, protect_every=args.protect_every, detect_every=args.detect_every,
                      keys=not args.no_keys, every=args.leak_every, render_every=args.render_every,
                      command=f"python bench/latency.py {' '.join(sys.argv[1:])}",
                      label=str(args.clip or "generated 640x480 astronaut clip"))
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    print((RESULTS / f"{args.name}.md").read_text())


if __name__ == "__main__":
    main()
