"""Runtime backends: PyTorch (the model itself), ONNX Runtime, TensorRT; ``select`` picks one with fallbacks."""
from .backends import OrtBackend, available, select

__all__ = ["OrtBackend", "available", "select"]
