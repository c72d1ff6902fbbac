"""The interface every runtime backend implements (PyTorch itself, ONNX Runtime, TensorRT, torch-cuda).

``Protector`` calls only these four, on torch tensors on the backend's device; ``None`` as a backend means the
DIFPModel's own methods (plain PyTorch). Backends hold no state between calls beyond their sessions/graphs."""
from __future__ import annotations

from typing import Protocol

import torch


class Backend(Protocol):
    name: str  # "onnxruntime", "tensorrt", "torch-cuda"

    def eps(self, z: torch.Tensor, t, ctx: torch.Tensor) -> torch.Tensor:
        """The U-Net's noise prediction for latents ``z`` [B, C, h, w] at timestep ``t`` with context tokens ``ctx``
        [B, N, D]."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """VAE encoder: images [B, 3, H, W] in [-1, 1] -> latents [B, C, h, w] (the mean, scaled)."""

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """VAE decoder: latents -> images in [-1, 1]."""

    def decode_protected(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder for protected faces: the fast model's small decoder where it has one, else ``decode``."""
