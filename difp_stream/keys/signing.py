"""Who wrote a key file: the filter signs what it writes with its Ed25519 key; readers accept only the signers they
trust. Without this anyone holding the recipient's *public* key could seal records of their own (chosen pixels) and
have them pasted into a restored video as if the filter had made them.

The filter host's key lives in the config folder (``$DIFP_STREAM_CONFIG`` or ``~/.config/difp-stream``):
``signer.key`` (PKCS#8 PEM, 0600, made on first use) and ``signer.key.pub``; readers trust that key, the public keys
in ``trusted/*.pub`` there, and any given with ``--trust``."""
from __future__ import annotations

import logging

import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .crypto import fingerprint, load_pem, public_bytes

log = logging.getLogger(__name__)

CONTEXT = b"difp-stream key file statement v1\n"


def config_dir() -> Path:
    return Path(os.environ.get("DIFP_STREAM_CONFIG") or Path.home() / ".config" / "difp-stream")


def generate_signer(path: str | Path) -> tuple[Path, Path]:
    """Write a new Ed25519 signing key (PEM, mode 0600; never replaces one) and ``PATH.pub``."""
    path = Path(path)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub = path.with_name(path.name + ".pub")
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return path, pub


def host_signer() -> Ed25519PrivateKey:
    """This host's signing key, made on first use."""
    path = config_dir() / "signer.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            generate_signer(path)
            log.info(f"made this host's key-file signing key {path} (readers trust {path}.pub)")
        except FileExistsError:  # another process made it meanwhile
            pass
    return load_signer(path)


def load_signer(path: str | Path) -> Ed25519PrivateKey:
    return load_pem(path, Ed25519PrivateKey, "signing key", private=True,
                    hint=" (make one with `difp-stream keygen --signer`)")


def load_verifier(path: str | Path) -> Ed25519PublicKey:
    return load_pem(path, Ed25519PublicKey, "public key", private=False, hint=" (a filter's signer.key.pub)")


raw = public_bytes  # the raw Ed25519 public key
signer_fingerprint = fingerprint


def default_trusted() -> list[Ed25519PublicKey]:
    """The host's own signer (if it has one) and every ``trusted/*.pub`` in the config folder."""
    d = config_dir()
    paths = ([d / "signer.key.pub"] if (d / "signer.key.pub").exists() else []) + sorted((d / "trusted").glob("*.pub"))
    return [load_verifier(p) for p in paths]


def sign(key: Ed25519PrivateKey, statement: bytes) -> bytes:
    return key.sign(CONTEXT + statement)


def verify(pub: bytes, signature: bytes, statement: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(pub).verify(signature, CONTEXT + statement)
        return True
    except (InvalidSignature, ValueError):
        return False
