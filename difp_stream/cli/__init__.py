"""Command line: argument parsing and wiring only. ``difp-stream IN OUT [options]`` protects a video, image or
folder (or a live stream); the other subcommands are named first: ``difp-stream recover ...``.

One module per subcommand group (protect, live, keys, train, tools, serve); ``common`` holds what they share: exit codes,
option types and groups, and the set-up factory (model -> runtime backend -> Protector, recipient, signer)."""
from __future__ import annotations

import sys

from .. import logs
from .common import EXIT_INTERRUPTED
from .keys import cmd_keygen, cmd_keys, cmd_recover
from .protect import cmd_protect
from .serve import cmd_serve
from .tools import cmd_bench, cmd_export
from .train import cmd_distill, cmd_encoder, cmd_styles, cmd_train

COMMANDS = {"train": cmd_train, "distill": cmd_distill, "encoder": cmd_encoder, "styles": cmd_styles, "keygen": cmd_keygen,
            "recover": cmd_recover, "keys": cmd_keys, "export": cmd_export, "bench": cmd_bench,
            "serve": cmd_serve}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logs.setup()
    try:
        if argv and argv[0] in COMMANDS:
            return COMMANDS[argv[0]](argv[1:])
        return cmd_protect(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


__all__ = ["main", "COMMANDS"]
