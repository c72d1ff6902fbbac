"""Runtime backends: PyTorch (the model itself), ONNX Runtime, TensorRT, torch-cuda (fp16 + CUDA graphs).

``base.Backend`` is the interface they share, ``select`` (in ``backends``) picks one with fallbacks, ``cache`` says
where exported graphs and engines live. Nothing here imports back into the pipeline."""
from .backends import available, select
from .base import Backend
from .ort import OrtBackend

__all__ = ["Backend", "OrtBackend", "available", "select"]
