"""Outputs that appear whole or not at all: each file is written under a hidden partial name beside its final name
and renamed when the run succeeds (or is interrupted cleanly); a failed run removes them, and the next run replaces
what a killed one left behind."""
from __future__ import annotations

import logging

import os
from pathlib import Path

from .errors import OutputError

log = logging.getLogger(__name__)


def partial_path(dst: str | Path) -> Path:
    dst = Path(dst)
    return dst.with_name(f".{dst.stem}.partial{dst.suffix}")


def check_writable(folder: str | Path) -> None:
    """Raise :class:`OutputError` unless a file can be created in ``folder`` (read-only folder or file system)."""
    folder = Path(folder)
    probe = folder / f".difp-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise OutputError(f"cannot write into {folder}: {e.strerror or e}") from None


def refuse_existing(path: str | Path, overwrite: bool) -> None:
    """An output that exists is replaced only with --overwrite."""
    if Path(path).exists() and not overwrite:
        raise OutputError(f"{path} exists (use --overwrite to replace it)")


def remove_stale(*tmps: str | Path) -> None:
    """Remove partial files that a killed run left behind (said on stderr)."""
    for tmp in map(Path, tmps):
        if tmp.exists():
            log.info(f"removing {tmp}, left by an earlier run that did not finish")
            tmp.unlink()


class Staged:
    """``stage(final) -> partial path`` to write to; ``commit()`` renames them all to their final names;
    ``discard()`` removes them. A partial file left by a killed run is replaced (said once on stderr)."""

    def __init__(self):
        self.files: dict[Path, Path] = {}

    def stage(self, final: str | Path, tmp: str | Path | None = None) -> Path:
        final = Path(final)
        tmp = Path(tmp) if tmp is not None else partial_path(final)
        remove_stale(tmp)
        self.files[final] = tmp
        return tmp

    def commit(self) -> list[Path]:
        done = []
        for final, tmp in list(self.files.items()):
            if tmp.exists():
                os.replace(tmp, final)
                done.append(final)
            del self.files[final]
        return done

    def discard(self) -> None:
        for tmp in self.files.values():
            tmp.unlink(missing_ok=True)
        self.files.clear()
