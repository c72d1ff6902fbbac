"""``difp-stream IN OUT``: protect a video, an image, or a folder of images (wiring only)."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INPUT, EXIT_OUTPUT, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def protect_parser() -> argparse.ArgumentParser:
    from .difp.config import SamplingConfig
    from .pipeline import PipelineConfig

    s, c = SamplingConfig(), PipelineConfig()
    p = argparse.ArgumentParser(
        prog="difp-stream",
        description="Replace every face in a video, image or folder of images with a generated face of nobody.",
        epilog="Other commands: difp-stream train ... (run `difp-stream train -h`). "
               "Exit codes: 0 ok, 1 processing error, 2 usage, 3 bad input, 4 output refused, 130 interrupted.")
    p.add_argument("input", help="video file, image, or folder of images")
    p.add_argument("output", help="output video / image / folder (same file names)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--seed", type=int, default=c.seed, help="makes the fake identities reproducible (default: 0)")
    p.add_argument("--model", default=None, help="model folder (default: the weights shipped in the package)")
    p.add_argument("--backend", default="torch", choices=["torch"], help="runtime backend (default: torch)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    g = p.add_argument_group("DIFP sampling")
    g.add_argument("--steps", type=int, default=s.steps, help=f"DDIM steps (default: {s.steps})")
    g.add_argument("--strength", type=float, default=s.strength, help=f"S_n, start at t = S_n*T (default: {s.strength})")
    g.add_argument("--s-id", type=float, default=s.s_id, help=f"identity guidance scale (default: {s.s_id})")
    g.add_argument("--s-sty", type=float, default=s.s_sty, help=f"style guidance scale (default: {s.s_sty})")
    g.add_argument("--g-rea", type=float, default=s.g_rea, help=f"realism scale (default: {s.g_rea})")
    g.add_argument("--adaptive-realism", action="store_true", help="g_rea per step from SSIM (paper Eq. 14)")
    f = p.add_argument_group("faces")
    f.add_argument("--threshold", type=float, default=c.threshold, help=f"detector score threshold (default: {c.threshold})")
    f.add_argument("--detect-every", type=int, default=c.detect_every, help="detect every N frames, track between (default: 1)")
    f.add_argument("--detect-size", type=int, default=c.detect_size, help=f"longest side for detection (default: {c.detect_size})")
    f.add_argument("--max-misses", type=int, default=c.max_misses, help=f"frames a lost face stays covered (default: {c.max_misses})")
    v = p.add_argument_group("video output")
    v.add_argument("--codec", default="libx264", help="video encoder (default: libx264)")
    v.add_argument("--crf", type=int, default=18, help="quality for x264/x265 (default: 18)")
    v.add_argument("--preset", default="veryfast", help="x264/x265 preset (default: veryfast)")
    k = p.add_argument_group("recovery keys")
    k.add_argument("--no-keys", action="store_true", help="irreversible: write no recovery keys")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _err(msg: str) -> None:
    print(f"difp-stream: error: {msg}", file=sys.stderr)


def _kind(path: Path) -> str:
    if path.is_dir():
        return "folder"
    return "image" if path.suffix.lower() in IMAGE_EXT else "video"


def build(args):
    """The protector stack from CLI options."""
    import torch

    from .difp import DIFPModel, Protector, SamplingConfig, load_default
    from .difp.identity import DlibIdentityEncoder
    from .pipeline import FaceProtector, PipelineConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = DIFPModel.load(args.model, device) if args.model else load_default(device)
    sampling = SamplingConfig(steps=args.steps, strength=args.strength, s_id=args.s_id, s_sty=args.s_sty,
                              g_rea=args.g_rea, adaptive_realism=args.adaptive_realism)
    cfg = PipelineConfig(seed=args.seed, detect_every=args.detect_every, threshold=args.threshold,
                         detect_size=args.detect_size, max_misses=args.max_misses, keys=False)
    return lambda: FaceProtector(Protector(model, sampling, device), DlibIdentityEncoder(), cfg)


def _check_paths(src: Path, dst: Path, overwrite: bool) -> None:
    from .video import InputError, OutputError

    if not src.exists():
        raise InputError(f"input not found: {src}")
    if dst.exists() and dst.resolve() == src.resolve():
        raise OutputError("output is the input; difp-stream never writes over its input")
    if dst.exists() and not overwrite and not (dst.is_dir() and not any(dst.iterdir())):
        raise OutputError(f"{dst} exists (use --overwrite to replace it)")
    if not dst.parent.exists():
        raise OutputError(f"output folder {dst.parent} does not exist")


def _image(make, src: Path, dst: Path) -> int:
    import cv2

    from .video import InputError, OutputError

    img = cv2.imread(str(src), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"cannot read image {src}")
    fp = make()
    out = fp.process(0, img[:, :, ::-1].copy())[:, :, ::-1]
    tmp = dst.with_name(f".{dst.stem}.partial{dst.suffix}")
    try:
        if not cv2.imwrite(str(tmp), out):
            raise OutputError(f"cannot write image {dst} (unknown extension?)")
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return fp.stats.faces


def cmd_protect(argv: list[str]) -> int:
    args = protect_parser().parse_args(argv)
    from .video import InputError, Interrupted, OutputError, transcode

    src, dst = Path(args.input), Path(args.output)
    try:
        _check_paths(src, dst, args.overwrite)
        kind = _kind(src)
        if kind == "folder":
            files = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_EXT)
            if not files:
                raise InputError(f"no images in {src}")
            dst.mkdir(exist_ok=True)
            for f in files:
                if (dst / f.name).exists() and not args.overwrite:
                    raise OutputError(f"{dst / f.name} exists (use --overwrite to replace it)")
        if not args.no_keys:
            print("note: recovery keys are not implemented yet: this run is irreversible (as with --no-keys)",
                  file=sys.stderr)
        make = build(args)
        t0 = time.time()
        if kind == "video":
            fp = make()
            n = transcode(src, dst, fp.process, codec=args.codec, crf=args.crf, preset=args.preset,
                          progress=not args.no_progress)
            st = fp.stats
            print(f"{dst}: {n} frames, {len(st.tracks)} tracks, {st.faces} face-frames covered "
                  f"({st.protected} replaced, {st.obscured} blurred), {n / max(time.time() - t0, 1e-9):.1f} fps",
                  file=sys.stderr)
        elif kind == "image":
            faces = _image(make, src, dst)
            print(f"{dst}: {faces} faces covered", file=sys.stderr)
        else:
            faces = sum(_image(make, f, dst / f.name) for f in files)
            print(f"{dst}: {len(files)} images, {faces} faces covered", file=sys.stderr)
        return EXIT_OK
    except InputError as e:
        _err(str(e))
        return EXIT_INPUT
    except OutputError as e:
        _err(str(e))
        return EXIT_OUTPUT
    except Interrupted as e:
        _err(str(e))
        return EXIT_INTERRUPTED
    except FileNotFoundError as e:
        _err(str(e))
        return EXIT_ERROR
