"""X25519 identities and sealing: ephemeral X25519 + HKDF-SHA256 + AES-256-GCM (the ``cryptography`` package)."""
from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import KeyError_

log = logging.getLogger(__name__)


def generate(secret_path: str | Path, passphrase: bytes | None = None) -> tuple[Path, Path]:
    """Write a new X25519 secret (PKCS#8 PEM, mode 0600, optionally passphrase-encrypted) and ``SECRET.pub``."""
    secret_path = Path(secret_path)
    key = X25519PrivateKey.generate()
    enc = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.chmod(secret_path, 0o600)
    pub_path = secret_path.with_name(secret_path.name + ".pub")
    pub_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo))
    return secret_path, pub_path


def load_pem(path: str | Path, cls, what: str, private: bool, passphrase: bytes | None = None, hint: str = ""):
    """A PEM key of type ``cls`` from ``path``, or a :class:`KeyError_` that says what is wrong with it; a private
    key that other users can read is used with a warning."""
    if private:
        warn_if_readable(path, what)
    try:
        data = Path(path).read_bytes()
        key = (serialization.load_pem_private_key(data, password=passphrase) if private
               else serialization.load_pem_public_key(data))
    except TypeError:
        raise KeyError_(f"{path} is passphrase-protected: give the passphrase (DIFP_PASSPHRASE or --passphrase-file)") from None
    except (ValueError, OSError) as e:
        raise KeyError_(f"cannot read {what} {path}: {e}") from None
    if not isinstance(key, cls):
        raise KeyError_(f"{path} is not an {cls.__name__.replace('PrivateKey', '').replace('PublicKey', '')} "
                        f"{what}{hint}")
    return key


def warn_if_readable(path: str | Path, what: str) -> bool:
    """Warn (and say True) when the group or others may read the private key file at ``path``."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return False
    if mode & 0o077:
        log.warning(f"{what} {path} can be read by other users (mode {mode:04o}): `chmod 600 {path}`")
        return True
    return False


def load_public(path: str | Path) -> X25519PublicKey:
    return load_pem(path, X25519PublicKey, "public key", private=False)


def load_secret(path: str | Path, passphrase: bytes | None = None) -> X25519PrivateKey:
    return load_pem(path, X25519PrivateKey, "secret key", private=True, passphrase=passphrase)


def public_bytes(key) -> bytes:
    """The raw public key (X25519 or Ed25519)."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(key) -> str:
    """A short name for a public key (X25519 or Ed25519): the first 8 bytes of its SHA-256, in hex."""
    h = hashes.Hash(hashes.SHA256())
    h.update(public_bytes(key))
    return h.finalize()[:8].hex()


def _kek(shared: bytes, eph_pub: bytes, recipient_pub: bytes, context: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=eph_pub + recipient_pub,
                info=b"difp-stream key wrap v1|" + context).derive(shared)


def seal(data_key: bytes, recipient: X25519PublicKey, context: bytes) -> bytes:
    """Wrap ``data_key`` to ``recipient``: ``eph_pub(32) | nonce(12) | AES-GCM(ciphertext + tag)``."""
    eph = X25519PrivateKey.generate()
    eph_pub, rec_pub = public_bytes(eph.public_key()), public_bytes(recipient)
    kek = _kek(eph.exchange(recipient), eph_pub, rec_pub, context)
    nonce = os.urandom(12)
    return eph_pub + nonce + AESGCM(kek).encrypt(nonce, data_key, context)


def unseal(blob: bytes, secret: X25519PrivateKey, context: bytes) -> bytes:
    if len(blob) < 32 + 12 + 16:
        raise KeyError_("sealed key too short")
    eph_pub, nonce, ct = blob[:32], blob[32:44], blob[44:]
    rec_pub = public_bytes(secret.public_key())
    kek = _kek(secret.exchange(X25519PublicKey.from_public_bytes(eph_pub)), eph_pub, rec_pub, context)
    try:
        return AESGCM(kek).decrypt(nonce, ct, context)
    except InvalidTag:
        raise KeyError_("this secret cannot open the key file (wrong secret, or the file was altered)") from None
