"""Recovery keys: X25519 identities, the sealed and signed per-track key file, the audit log."""
from .crypto import KeyError_, generate, load_public, load_secret
from .keyfile import FaceRecord
from .reader import KeyReader
from .writer import KeyWriter
from .signing import default_trusted, generate_signer, host_signer, load_signer, load_verifier

__all__ = ["KeyError_", "generate", "load_public", "load_secret", "FaceRecord", "KeyReader", "KeyWriter",
           "default_trusted", "generate_signer", "host_signer", "load_signer", "load_verifier"]


def key_path_for(output):
    """Where an output's key file goes by default: ``OUTPUT.difpkeys`` beside it."""
    from pathlib import Path

    p = Path(output)
    return p.with_name(p.name + ".difpkeys")
