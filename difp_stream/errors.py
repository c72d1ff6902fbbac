"""The errors a user can meet, each with its documented exit code (the CLI turns them into one line + that code)."""
from __future__ import annotations


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


def redact(url: str) -> str:
    """A URL without its credentials (``rtsp://user:pass@host/x`` -> ``rtsp://***@host/x``), for messages."""
    s = str(url)
    scheme, sep, rest = s.partition("://")
    if not sep:
        return s
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    return f"{scheme}://{netloc}{slash}{path}"


def redact_message(e: Exception | str, url: str) -> str:
    """An error message with the URL's credentials taken out (FFmpeg quotes the URL it failed on)."""
    return str(e).replace(str(url), redact(url))
