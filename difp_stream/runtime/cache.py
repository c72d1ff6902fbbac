"""Where exported graphs and built engines live (one place for every backend).

* ONNX exports: ``$DIFP_STREAM_CACHE/onnx/FINGERPRINT`` (default ``~/.cache/difp-stream``), made on first use.
* TensorRT engines: ``$DIFP_STREAM_ENGINES``; else the checkout's top-level ``engines/`` (the design card's place
  for built engines) when running from a source tree, else ``CACHE/engines`` for an installed package."""
from __future__ import annotations

import os
from pathlib import Path
from .onnx_export import export

_CHECKOUT_ENGINES = Path(__file__).resolve().parents[2] / "engines"


def cache_dir() -> Path:
    return Path(os.environ.get("DIFP_STREAM_CACHE") or Path.home() / ".cache" / "difp-stream")


def engines_dir() -> Path:
    if os.environ.get("DIFP_STREAM_ENGINES"):
        return Path(os.environ["DIFP_STREAM_ENGINES"])
    return _CHECKOUT_ENGINES if (_CHECKOUT_ENGINES / "README.md").exists() else cache_dir() / "engines"


def onnx_dir(model, folder: str | Path | None = None) -> Path:
    """The model's ONNX graphs (``folder``, or the cache's folder for its fingerprint), exported if missing."""
    d = Path(folder) if folder else cache_dir() / "onnx" / model.fingerprint()
    if not (d / "export.json").is_file():
        export(model, d, log=lambda m: None)  # (the export moves the model to the CPU)
    return d
