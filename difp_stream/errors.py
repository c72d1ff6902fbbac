"""The errors a user can meet, each with its documented exit code (the CLI turns them into one line + that code)."""
from __future__ import annotations

import re
from urllib.parse import unquote


class DifpError(Exception):
    """An expected failure with a clear message; ``exit_code`` is what the command line returns."""

    exit_code = 1


class UsageError(DifpError):
    """Options that cannot work together or are out of range."""

    exit_code = 2


class InputError(DifpError):
    """The input cannot be used (missing, unreadable, no video stream)."""

    exit_code = 3


class OutputError(DifpError):
    """The output cannot be written (exists, same as input, unwritable, disk full)."""

    exit_code = 4


class KeyError_(DifpError):
    """A key or key file cannot be used (wrong secret, tampered, untrusted signer, truncated, wrong video)."""

    exit_code = 5


_HOST = re.compile(r"[A-Za-z0-9.\-\[\]:]*(?=[/?#]|$)")  # host[:port] up to the path, query or end


def _split_credentials(url: str) -> tuple[str, str, str] | None:
    """(scheme://, the credentials, @host...) of a URL with credentials, whatever characters the password holds
    (``/``, ``@``, ``:``, ``#`` unescaped): they end at the first ``@`` followed by a bare host, and hold a ``:``
    before any ``/`` (``rtsp://host/a@b`` has none); None without."""
    scheme, sep, rest = str(url).partition("://")
    if not sep:
        return None
    for at in (i for i, ch in enumerate(rest) if ch == "@"):
        creds = rest[:at]
        if "/" in creds and ":" not in creds.partition("/")[0]:
            return None  # a path with an ``@`` in it, no credentials
        if _HOST.match(rest, at + 1):
            return scheme + sep, creds, rest[at:]
    return None


def redact(url: str) -> str:
    """A URL without its credentials (``rtsp://user:pass@host/x`` -> ``rtsp://***@host/x``), for messages."""
    parts = _split_credentials(url)
    return str(url) if parts is None else f"{parts[0]}***{parts[2]}"


def redact_message(e: Exception | str, url: str) -> str:
    """An error message with the URL's credentials taken out (FFmpeg quotes the URL it failed on, sometimes
    percent-decoded or cut): the URL, then its credentials and password wherever they still appear."""
    text = str(e).replace(str(url), redact(url))
    parts = _split_credentials(url)
    if parts is not None:
        creds = parts[1]
        secrets = {creds, creds.partition(":")[2], unquote(creds), unquote(creds.partition(":")[2])}
        for secret in sorted((x for x in secrets if len(x) >= 3), key=len, reverse=True):
            text = text.replace(secret, "***")
    return text


def stop_on_sigterm(*_):
    """A SIGTERM handler (systemd, docker stop, Kubernetes) that stops a run as Ctrl-C does: a playable output, the
    open segment finalised, its keys closed."""
    raise KeyboardInterrupt
