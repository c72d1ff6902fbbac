"""Choosing a runtime backend (the interface they share: ``runtime/base.py``; where exports live: ``cache.py``).

- ``torch``: the DIFPModel itself (CPU or CUDA).
- ``onnxruntime``: the exported graphs on ONNX Runtime (CPU; CUDA / TensorRT execution providers when installed).
- ``tensorrt``: engines built from the same ONNX files (see ``runtime/tensorrt.py``), GPU only.
- ``torch-cuda``: PyTorch on a CUDA GPU in fp16 with CUDA graphs (see ``runtime/cuda_graphs.py``), GPU only.
``select(name, model)`` resolves ``auto`` and falls back with a one-line reason."""
from __future__ import annotations

import logging

import torch

from ..difp.models import DIFPModel
from .ort import OrtBackend
from .styles import StyleBackend

_log = logging.getLogger(__name__)


def available() -> dict[str, str | None]:
    """Backend -> None when usable here, else the reason it is not."""
    out: dict[str, str | None] = {"torch": None}
    try:
        import onnxruntime  # noqa: F401  (availability check)

        out["onnxruntime"] = None
    except ImportError as e:
        out["onnxruntime"] = f"onnxruntime not installed ({e})"
    try:
        import tensorrt  # noqa: F401

        out["tensorrt"] = None if torch.cuda.is_available() else "no CUDA GPU"
    except ImportError:
        out["tensorrt"] = "TensorRT is not installed"
    out["torch-cuda"] = None if torch.cuda.is_available() else "no CUDA GPU"
    return out


def select(name: str, model: DIFPModel, device: str = "cpu", log=None):
    """The backend object for ``name`` (``auto``: on a GPU TensorRT where installed, else PyTorch fp16 with CUDA
    graphs; on CPU ONNX Runtime, else PyTorch). Returns ``(backend or None for plain torch, name used)``."""
    say = log or _log.warning
    avail = available()
    if model.kind == "stylespace":
        return _select_styles(name, model, avail, say)
    order = [name] if name != "auto" else (["tensorrt", "torch-cuda", "torch"] if device.startswith("cuda") else ["onnxruntime", "torch"])
    for cand in order:
        why = avail.get(cand, f"unknown backend {cand}")
        if why is None:
            try:
                if cand == "torch":
                    return None, "torch"
                if cand == "onnxruntime":
                    return OrtBackend(model), cand
                if cand == "tensorrt":
                    from .tensorrt import TrtBackend  # (TensorRT: optional, GPU only)

                    return TrtBackend(model), cand
                if cand == "torch-cuda":
                    from .cuda_graphs import CudaGraphBackend  # (GPU only)

                    return CudaGraphBackend(model), cand
            except Exception as e:  # fall back, saying why in one line
                why = f"{type(e).__name__}: {e}"
        say(f"backend {cand} unavailable ({why}); falling back")
    return None, "torch"


def _select_styles(name: str, model, avail: dict, say):
    """A style-space model: the generator and encoder on OpenVINO (auto, where installed), ONNX Runtime, or
    PyTorch; GPU backends are not built for it yet (PyTorch on CUDA runs it)."""
    try:
        import openvino  # noqa: F401

        ov = None
    except ImportError as e:
        ov = f"openvino not installed ({e})"
    order = [name] if name != "auto" else ["openvino", "onnxruntime", "torch"]
    for cand in order:
        why = {"openvino": ov, "onnxruntime": avail.get("onnxruntime"), "torch": None}.get(
            cand, f"{cand} does not run style-space models yet")
        if why is None:
            return (None, "torch") if cand == "torch" else (StyleBackend(model, cand), cand)
        say(f"backend {cand} unavailable ({why}); falling back")
    return None, "torch"
