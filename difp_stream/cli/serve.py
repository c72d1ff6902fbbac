"""`difp-stream serve CONFIG`: many cameras on Ray (see ``difp_stream/serve``)."""
from __future__ import annotations

import argparse
import sys

from ..serve import load, read_status, serve
from ..errors import UsageError
from .common import EXIT_OK, expected, fail, num


def cmd_serve(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="difp-stream serve",
                                description="Filter many cameras on Ray: camera workers that Ray places and restarts, "
                                            "and one face-model service that batches faces across cameras.")
    p.add_argument("config", help="TOML file: [model], [serve], [defaults] and one [[camera]] table per camera")
    p.add_argument("--address", default=None, help="join this Ray cluster (e.g. auto, or HOST:6379); default: start "
                                                   "a local one")
    p.add_argument("--status", action="store_true", help="print the running service's status (its status file) and exit")
    p.add_argument("--check", action="store_true", help="check the config and exit")
    p.add_argument("--duration", type=num(float, 0), default=0.0, help="stop after this many seconds (default: run on)")
    args = p.parse_args(argv)
    try:
        cfg = load(args.config)
        if args.check:
            print(f"{args.config}: {len(cfg.cameras)} cameras, model {cfg.model.name} x{cfg.model.replicas}: ok")
            return EXIT_OK
        if args.status:
            if not cfg.status_file.is_file():
                print(f"no status yet ({cfg.status_file}): is `difp-stream serve {args.config}` running?",
                      file=sys.stderr)
                return 1
            print(read_status(cfg.status_file))
            return EXIT_OK
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UsageError('`serve` needs Ray: pip install "difp-stream[serve]" (or pip install ray)') from None
        status = serve(cfg, args.address, args.duration)
        bad = [n for n, c in status.get("cameras", {}).items() if c["state"].startswith("failed")]
        for n in bad:
            print(f"camera {n}: {status['cameras'][n].get('error') or status['cameras'][n]['state']}", file=sys.stderr)
        return 1 if bad else EXIT_OK
    except expected() as e:
        return fail(e)
