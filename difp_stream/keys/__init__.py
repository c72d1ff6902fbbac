"""Recovery keys: X25519 identities, the sealed per-track key file, the audit log."""
from .crypto import KeyError_, generate, load_public, load_secret
from .keyfile import FaceRecord, KeyReader, KeyWriter

__all__ = ["KeyError_", "generate", "load_public", "load_secret", "FaceRecord", "KeyReader", "KeyWriter"]
