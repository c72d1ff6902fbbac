"""What every subcommand shares: exit codes and error reporting, option types, flags made from the option
dataclasses (``app/options.py``), the passphrase."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import fields
from pathlib import Path

from ..app import build
from ..app.options import BACKENDS, ModelOptions, SamplingOptions, VideoOptions, out_of_range, span
from ..errors import DifpError, UsageError
from ..video import Interrupted

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INPUT, EXIT_OUTPUT, EXIT_KEYS, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 5, 130
EXIT_CODES = ("Exit codes: 0 ok, 1 processing error, 2 usage, 3 bad input, 4 output refused, 5 key problem "
              "(wrong secret, untrusted signer, altered/incomplete key file, key file of another video), "
              "130 interrupted.")
log = logging.getLogger("difp_stream")


def error(msg: str) -> None:
    print(f"difp-stream: error: {msg}", file=sys.stderr)


def fail(e: Exception) -> int:
    """One-line message and the documented exit code for an expected failure (each error carries its code). A usage
    error leaves like argparse's own: SystemExit(2)."""
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
    return (DifpError, FileExistsError, FileNotFoundError, Interrupted)


def num(kind, lo: float | None = None, hi: float | None = None, open_lo: bool = False):
    """An argparse type: a number of ``kind`` in [lo, hi] (``open_lo``: lo itself excluded); else exit 2."""
    meta = {"lo": lo, "hi": hi, "open_lo": open_lo}

    def conv(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        if out_of_range(meta, v):
            raise argparse.ArgumentTypeError(f"{text} is out of range {span(meta)}")
        return v
    return conv


def add_options(p: argparse.ArgumentParser, section, title: str | None = None, only: tuple = (),
                defaults: dict | None = None, helps: dict | None = None, choices: dict | None = None) -> None:
    """One flag per field of an options section (``app/options.py``: names, defaults, ranges and help live there);
    ``only``: these fields; ``defaults`` / ``helps`` / ``choices``: a subcommand's own."""
    g = p.add_argument_group(title) if title else p
    for f in fields(section):
        if only and f.name not in only:
            continue
        m, flag = f.metadata, "--" + f.name.replace("_", "-")
        kw = {"default": (defaults or {}).get(f.name, f.default), "help": (helps or {}).get(f.name, m["help"])}
        if m["kind"] is bool:
            g.add_argument(flag, action="store_true", help=kw["help"])
            continue
        if m["metavar"]:
            kw["metavar"] = m["metavar"]
        if m["choices"]:
            kw["choices"] = (choices or {}).get(f.name, m["choices"])
            if m["kind"] is not str:
                kw["type"] = m["kind"]
        elif m["kind"] in (int, float):
            ranged = m["lo"] is not None or m["hi"] is not None
            kw["type"] = num(m["kind"], m["lo"], m["hi"], m["open_lo"]) if ranged else m["kind"]
        g.add_argument(flag, **kw)


def model_args(p: argparse.ArgumentParser, more_backends: tuple = ()) -> None:
    add_options(p, ModelOptions, choices={"backend": (*BACKENDS, *more_backends)})  # (bench: "all")


def video_args(p: argparse.ArgumentParser, crf: int | None = 18, crf_help: str | None = None) -> None:
    add_options(p, VideoOptions, "video output", only=("codec", "crf", "preset"), defaults={"crf": crf},
                helps={"crf": f"quality, lower is better (default: {crf_help or crf})"})


def load_model(args):
    """The model ``--model`` / ``--device`` / ``--threads`` name (subcommands other than protect)."""
    return build.load_model(ModelOptions(args.model, args.backend, args.device, args.threads))


def make_protector(args, model, device):
    """A Protector with the model's own sampling, on ``--backend`` (recover)."""
    return build.make_protector(ModelOptions(args.model, args.backend, args.device, args.threads),
                                SamplingOptions(), model, device)[0]


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
