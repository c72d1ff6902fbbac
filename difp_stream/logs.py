"""Messages: every module logs to its own ``logging`` logger under ``difp_stream``; the command line shows them on
stderr as ``note: ...`` (info) and ``warning: ...`` (warnings and above). Library users configure logging as they
like (without any set-up, Python prints warnings and drops notes)."""
from __future__ import annotations

import logging
import sys


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (test captures, redirected consoles)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        tag = "note" if record.levelno < logging.WARNING else "warning"
        return f"{tag}: {record.getMessage()}"


def setup(level: int = logging.INFO) -> None:
    root = logging.getLogger("difp_stream")
    if not any(isinstance(h, _Stderr) for h in root.handlers):
        h = _Stderr()
        h.setFormatter(_Format())
        root.addHandler(h)
        root.propagate = False
    root.setLevel(level)
