"""Tools: `export` (ONNX / TensorRT) and `bench` (measure on your own clip)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..app import benchmark
from ..difp import registry
from ..runtime.cache import cache_dir
from ..runtime.onnx_export import export
from ..runtime.styles import export_graphs
from ..video.io import open_input
from ..video import InputError
from .common import EXIT_OK, expected, fail, load_model, model_args


def cmd_export(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="difp-stream export",
                                description="Export the model to ONNX (dynamic batch, checked against PyTorch) and, "
                                            "with --tensorrt, build TensorRT engines from it.")
    p.add_argument("--model", default=None, help="'default' or a model folder (default: the shipped default)")
    p.add_argument("--out", default=None, help="ONNX folder (default: ~/.cache/difp-stream/onnx/FINGERPRINT)")
    p.add_argument("--tensorrt", action="store_true", help="also build TensorRT engines into engines/ (GPU only)")
    args = p.parse_args(argv)
    model = registry.load_model(args.model)
    if model.kind == "stylespace":  # its cost is the encoder and the renders: those graphs
        for path in export_graphs(model, Path(args.out) if args.out else None):
            print(path)
        if args.tensorrt:
            print("TensorRT engines are not built for the style-space model yet: on a GPU it runs on PyTorch "
                  "(--backend torch-cuda)", file=sys.stderr)
        return EXIT_OK
    out = Path(args.out) if args.out else cache_dir() / "onnx" / model.fingerprint()
    export(model, out)
    if args.tensorrt:
        from ..runtime.tensorrt import TrtBackend  # (TensorRT: optional, GPU only)

        TrtBackend(model.to("cuda"))
        print("TensorRT engines built under engines/")
    return EXIT_OK


def cmd_bench(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="difp-stream bench",
                                description="Measure difp-stream on your clip: latency per stage, fps, identity leaks, "
                                            "fake-identity stability, and deface side by side (when installed).")
    p.add_argument("clip", help="a video file")
    p.add_argument("--out", default="difp-bench", help="folder for NAME.json, NAME.md and the PNG figures")
    p.add_argument("--name", default="bench", help="file name stem of the results (default: bench)")
    p.add_argument("--frames", type=int, default=100, help="frames to process (0: all; default: 100)")
    p.add_argument("--no-deface", action="store_true", help="skip the deface side-by-side")
    p.add_argument("--every", type=int, default=5, help="check privacy on every Nth frame (default: 5)")
    p.add_argument("--protect-every", type=int, default=4)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--no-keys", action="store_true", help="measure without recovery keys")
    model_args(p, ("all",))  # all: the whole pipeline once per available backend
    args = p.parse_args(argv)
    try:
        if not Path(args.clip).is_file():
            raise InputError(f"input not found: {args.clip}")
        open_input(args.clip).close()
        model, _ = load_model(args)
        if not args.no_deface and benchmark.deface_exe() is None:
            print("note: deface is not installed (pip install deface); no side-by-side", file=sys.stderr)
        benchmark.run(args.clip, args.out, args.name, model, frames=args.frames, deface=not args.no_deface,
                      backend=args.backend, steps=args.steps, protect_every=args.protect_every, detect_every=1,
                      keys=not args.no_keys, every=args.every, command="difp-stream bench " + " ".join(argv))
    except expected() as e:
        return fail(e)
    print(Path(args.out, f"{args.name}.md").read_text())
    return EXIT_OK
