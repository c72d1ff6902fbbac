"""Audit log: one JSON line per disclosure, appended next to the key file."""
from __future__ import annotations

import getpass
import hashlib
import json
import socket
import time
from pathlib import Path


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def audit_path(keyfile: str | Path) -> Path:
    p = Path(keyfile)
    return p.with_name(p.name + ".audit.log")


def append(keyfile: str | Path, action: str, **fields) -> Path:
    try:
        user = getpass.getuser()
    except Exception:  # no login name in some containers
        user = "unknown"
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "user": user, "host": socket.gethostname(),
             "action": action, **fields}
    path = audit_path(keyfile)
    with open(path, "a") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")
    return path
