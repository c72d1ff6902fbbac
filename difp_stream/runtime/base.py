"""The interface every runtime backend implements (ONNX Runtime, TensorRT, torch-cuda for a pixel model; OpenVINO,
ONNX Runtime for a style-space model), and every model itself (plain PyTorch: ``None`` as a backend).

``Protector`` calls only these four, on torch tensors on the backend's device. A pixel model's "latent" is its VAE
latent [B, C, h, w] and it decodes at its own resolution; a style-space model's is W+ [B, layers, 512] (the
"encoder" is the face encoder, the "decoder" the face generator, which renders at any ``size``). Backends hold no
state between calls beyond their sessions/graphs."""
from __future__ import annotations

from typing import Protocol

import torch


class Backend(Protocol):
    name: str  # "onnxruntime", "tensorrt", "torch-cuda", "openvino"

    def eps(self, z: torch.Tensor, t, ctx: torch.Tensor) -> torch.Tensor:
        """The noise predictor's output for latents ``z`` at timestep ``t`` with context tokens ``ctx`` [B, N, D]."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, R, R] in [-1, 1] (R: the model's resolution) -> latents."""

    def decode(self, z: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """Latents -> images [B, 3, S, S] in [-1, 1]; ``size`` S: None (the model's) or, for a style-space model,
        any of its render sizes (a pixel model refuses another)."""

    def decode_protected(self, z: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """The decoder for protected faces (a pixel model's small decoder where it has one), else ``decode``."""
