"""What every subcommand shares: exit codes and error reporting, option types and groups, the set-up factory
(model -> runtime backend -> Protector), paths and key-file helpers."""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from pathlib import Path

from ..errors import DifpError, UsageError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INPUT, EXIT_OUTPUT, EXIT_KEYS, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 5, 130
EXIT_CODES = ("Exit codes: 0 ok, 1 processing error, 2 usage, 3 bad input, 4 output refused, 5 key problem "
              "(wrong secret, untrusted signer, altered/incomplete key file, key file of another video), "
              "130 interrupted.")
IMAGE_KEY_RESOLUTION = 256  # keys of still images restore the face at 256 px (~0.2 s per face on a CPU)
log = logging.getLogger("difp_stream")


def error(msg: str) -> None:
    print(f"difp-stream: error: {msg}", file=sys.stderr)


def fail(e: Exception) -> int:
    """One-line message and the documented exit code for an expected failure (each error carries its code). A usage
    error leaves like argparse's own: SystemExit(2)."""
    from ..video import Interrupted

    error(str(e))
    if isinstance(e, UsageError):
        raise SystemExit(EXIT_USAGE) from None
    if isinstance(e, DifpError):
        return e.exit_code
    if isinstance(e, FileExistsError):
        return EXIT_OUTPUT
    if isinstance(e, FileNotFoundError):
        return EXIT_INPUT
    return EXIT_INTERRUPTED if isinstance(e, Interrupted) else EXIT_ERROR


def expected() -> tuple:
    from ..video import Interrupted

    return (DifpError, FileExistsError, FileNotFoundError, Interrupted)


def num(kind, lo: float | None = None, hi: float | None = None, open_lo: bool = False):
    """An argparse type: a number of ``kind`` in [lo, hi] (``open_lo``: lo itself excluded); else exit 2."""
    span = f"{'(' if open_lo else '['}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"

    def conv(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        if not math.isfinite(v) or (lo is not None and (v <= lo if open_lo else v < lo)) or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"{text} is out of range {span}")
        return v
    return conv


def model_args(p: argparse.ArgumentParser, more_backends: tuple = ()) -> None:
    p.add_argument("--model", default=None,
                   help="model: 'default' (shipped: photoreal, DIFP in a face generator's style space) or a folder "
                        "(from `difp-stream styles fit`, or a pixel-space model from `difp-stream train`)")
    p.add_argument("--backend", default="auto",
                   choices=["auto", "torch", "torch-cuda", "onnxruntime", "tensorrt", "openvino", *more_backends],
                   help="runtime for the U-Net and VAE (default: auto = on a GPU TensorRT where installed, else "
                        "torch-cuda: PyTorch fp16 with CUDA graphs; on CPU ONNX Runtime, else PyTorch); a "
                        "style-space model renders with OpenVINO (auto, where installed), ONNX Runtime or PyTorch")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=num(int, 1, 1024), default=None, help="CPU threads for torch")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def video_args(p: argparse.ArgumentParser, crf: int | None = 18, crf_help: str | None = None) -> None:
    v = p.add_argument_group("video output")
    v.add_argument("--codec", default=None, help="video encoder (default: libx264, or the container's own where it "
                                                "takes no H.264, e.g. VP9 for .webm)")
    v.add_argument("--crf", type=num(int, 0, 63), default=crf, help=f"quality, lower is better (default: {crf_help or crf})")
    v.add_argument("--preset", default="veryfast", help="x264/x265 preset (default: veryfast)")


def kind_of(path: Path) -> str:
    if path.is_dir():
        return "folder"
    from ..video.images import IMAGE_EXT

    return "image" if path.suffix.lower() in IMAGE_EXT else "video"


def load_model(args):
    import torch

    from ..difp import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return load_model(args.model, device), device


def make_protector(args, model, device, sampling=None):
    from ..difp import Protector
    from ..difp.protector import check_sampling
    from ..runtime import select

    try:  # settings the model cannot serve (e.g. another --s-id for a distilled model) are a usage error
        check_sampling(model.cfg, sampling or model.cfg.sampling_config())
    except ValueError as e:
        raise UsageError(str(e)) from None
    backend, _ = select(args.backend, model, device)
    try:
        return Protector(model, sampling, device, backend=backend, key_refine=getattr(args, "key_refine", None) or 0,
                         key_resolution=getattr(args, "key_resolution", None) or 0)
    except ValueError as e:  # e.g. a key resolution that is not a multiple of the model's
        raise UsageError(str(e)) from None


def sampling(args, model):
    try:  # out-of-range values (e.g. --g-rea 2) are a usage error, not a traceback
        return model.cfg.sampling_config(steps=args.steps, strength=args.strength, s_id=args.s_id, s_sty=args.s_sty,
                                         g_rea=args.g_rea, adaptive_realism=args.adaptive_realism or None,
                                         surrogate_spread=args.surrogate_spread, inversion_steps=args.inversion_steps,
                                         start_noise=args.start_noise)
    except ValueError as e:
        raise UsageError(str(e)) from None


def check_paths(src: Path, dst: Path, overwrite: bool) -> None:
    from ..files import check_writable, refuse_existing
    from ..video import InputError, OutputError

    if not src.exists():
        raise InputError(f"input not found: {src}")
    if dst.exists() and dst.resolve() == src.resolve():
        raise OutputError("output is the input; difp-stream never writes over its input")
    if not (dst.is_dir() and not any(dst.iterdir())):  # an empty folder may be filled
        refuse_existing(dst, overwrite)
    if not dst.parent.exists():
        raise OutputError(f"output folder {dst.parent} does not exist")
    check_writable(dst if dst.is_dir() else dst.parent)


def check_key_path(key_path: Path, *others: Path) -> None:
    """A key file never lands on the input or the output (with --overwrite it would replace them)."""
    from ..video import OutputError

    for other in others:
        if key_path.resolve() == other.resolve() or (key_path.exists() and other.exists() and key_path.samefile(other)):
            raise OutputError(f"the key file {key_path} would be the input or the output ({other}): give the key "
                              "file a name of its own (--keys), or the output another name")


def key_shapes(model, key_resolution: int) -> dict:
    c = model.cfg
    if getattr(c, "kind", "") == "stylespace":
        lat = [c.n_layers, c.style_dim]
        return {"z_ts": lat, "correction": lat, "id_code": [c.id_dim], "style": [c.style_tokens, c.token_dim]}
    lat = [c.latent_channels, c.latent_size, c.latent_size]
    k = c.latent_size * key_resolution // c.resolution
    return {"z_ts": lat, "correction": [c.latent_channels, k, k], "id_code": [c.id_dim],
            "style": [c.style_tokens, c.token_dim]}


def auto_pair(dst: Path) -> tuple[Path, Path]:
    """Where the key pair made for an output without --recipient goes."""
    secret = dst.with_name(dst.name + ".difpkeys.secret")
    return secret, pub_of(secret)


def pub_of(secret: Path) -> Path:
    return secret.with_name(secret.name + ".pub")


def recipient(args, dst: Path, staged):
    """The public key to seal to; without --recipient a fresh pair is made beside the output (loudly), staged with
    the run's other outputs (a failed run leaves no secret behind)."""
    from ..keys import generate, load_public

    if args.recipient:
        return load_public(args.recipient)
    secret, pub = auto_pair(dst)
    if secret.exists() or pub.exists():
        raise FileExistsError(f"{secret} exists; pass --recipient or move it away")
    tmp = staged.stage(secret)
    staged.stage(pub, pub_of(tmp))
    _, tmp_pub = generate(tmp)
    print(f"!!! no --recipient given: a new key pair was made. The SECRET that unlocks the original faces is\n"
          f"!!!   {secret}  (mode 0600)\n"
          f"!!! Move it off this machine and keep it safe; anyone holding it and the key file can undo the protection.",
          file=sys.stderr)
    return load_public(tmp_pub)


def signer(args):
    from ..keys import host_signer, load_signer

    return load_signer(args.sign_key) if args.sign_key else host_signer()


def pipeline_cfg(args, keys: bool):
    from ..pipeline import PipelineConfig

    return PipelineConfig(seed=args.seed, detect_every=args.detect_every, threshold=args.threshold,
                          detect_size=args.detect_size, max_misses=args.max_misses, keys=keys,
                          protect_every=args.protect_every, carry_cutoff=args.carry_cutoff,
                          render_every=args.render_every, max_render=args.max_render, check_every=args.check_every,
                          expression=getattr(args, "expression", "on") == "on",
                          attributes=getattr(args, "attributes", PipelineConfig.attributes),
                          expression_tolerance=getattr(args, "expression_tolerance",
                                                       PipelineConfig.expression_tolerance),
                          pixels_quality=args.faithful_quality if args.recovery == "faithful" else 0,
                          skip_below=args.skip_below, verify_distance=args.verify_distance, min_difp=args.min_difp,
                          exact=args.recovery in ("exact", "faithful"), verify_every=args.verify == "every")


def passphrase(args) -> bytes | None:
    if getattr(args, "passphrase_file", None):
        try:
            text = Path(args.passphrase_file).read_bytes().rstrip(b"\r\n")
        except OSError as e:
            raise UsageError(f"cannot read passphrase file {args.passphrase_file}: {e.strerror or e}") from None
        if not text:
            raise UsageError(f"passphrase file {args.passphrase_file} is empty (a secret is never left unencrypted "
                             "by mistake: omit --passphrase-file for an unencrypted one)")
        return text
    env = os.environ.get("DIFP_PASSPHRASE")
    if env is not None and not env.strip():
        raise UsageError("DIFP_PASSPHRASE is set but empty (a secret is never left unencrypted by mistake: unset it "
                         "for an unencrypted one)")
    return env.encode() if env else None
