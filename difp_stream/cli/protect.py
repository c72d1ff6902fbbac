"""`difp-stream INPUT OUTPUT`: protect a video, an image or a folder of images (a stream URL, or --live: a stream).
The flags are made from the option dataclasses (``app/options.py``); this module turns argv into
:class:`~difp_stream.app.options.Options` and hands them to ``app.files`` or ``app.live``."""
from __future__ import annotations

import argparse
import signal

from ..app.files import protect_files
from ..app.live import protect_stream
from ..app.options import SECTIONS, TITLES, Options
from ..errors import stop_on_sigterm
from ..video.source import is_url
from .common import EXIT_CODES, EXIT_OK, add_options, expected, fail


def protect_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="difp-stream",
        description="Replace every face in a video, image or folder of images with a generated face of nobody.",
        epilog="Other commands: train, distill, encoder, styles, keygen, recover, keys, export, bench, serve (run "
               "`difp-stream COMMAND -h`). " + EXIT_CODES)
    p.add_argument("input", help="video file, image, folder of images, or a stream URL (rtsp://, rtsps://, ...)")
    p.add_argument("output", nargs="+", help="output video / image / folder (same file names); for a live stream one "
                                             "or more of: an rtsp:// URL to publish to, a file, a segment pattern")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    for name, section in SECTIONS.items():
        add_options(p, section, TITLES[name])
    return p


def cmd_protect(argv: list[str]) -> int:
    p = protect_parser()
    args = vars(p.parse_args(argv))
    live = is_url(args["input"]) or args["live"]
    if not live and len(args["output"]) != 1:
        p.error("one output for a file input (several outputs are for live streams)")
    args["outputs"] = args.pop("output")
    previous = None if live else signal.signal(signal.SIGTERM, stop_on_sigterm)  # finishes like Ctrl-C
    try:
        opts = Options.from_flat(args)  # (the flags' ranges were checked by the parser: the same ones)
        if live:
            protect_stream(opts)
        else:
            protect_files(opts)
        return EXIT_OK
    except expected() as e:
        return fail(e)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
