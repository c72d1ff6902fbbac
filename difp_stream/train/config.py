"""The DIFP training loop's settings and the small helpers its phases share."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

from ..difp.models import DIFPModel


@dataclass
class TrainConfig:
    vae_steps: int = 6000
    stage1_steps: int = 2000
    stage2_steps: int = 6000
    decoder_steps: int = 2000
    batch_vae: int = 32
    batch_unet: int = 64
    lr_vae: float = 5e-4
    lr_unet: float = 3e-4
    lr_decoder: float = 2e-4
    # decoder phase: > 0 also trains the VAE encoder, held near its old latents by this weight on the squared
    # distance (in the U-Net's scaled latent space), so recovery gets sharper while the U-Net's space barely moves
    encoder_anchor: float = 0.0
    weight_decay: float = 1e-3  # the paper's
    drop: float = 0.4  # stage 2: probability of replacing each condition by its null token (paper ~40%)
    kl_weight: float = 1e-6
    same_photo_identity: float = 0.5  # share of samples whose identity code comes from the same photo
    checkpoint_seconds: float = 300.0
    # > 0: each phase ends within about this many minutes (a short GPU lease): after 20 steps the phase's step
    # count is cut to what fits, so its learning-rate schedule still anneals; the cut is kept for a resume
    phase_minutes: float = 0.0
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two batches in [-1, 1]."""
    mse = F.mse_loss((a + 1) / 2, (b + 1) / 2).item()
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def _to_x(images: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def fit_identity_stats(model: DIFPModel, desc: np.ndarray) -> None:
    """Standardisation of the embeddings and the surrogate Gaussian (mean + Cholesky factor of the covariance)."""
    d = torch.from_numpy(desc.astype(np.float64))
    mean, std = d.mean(0), d.std(0).clamp_min(1e-6)
    cov = torch.cov(d.T) + 1e-6 * torch.eye(d.shape[1], dtype=torch.float64)
    model.id_mean.copy_(mean.float())
    model.id_std.copy_(std.float())
    model.id_chol.copy_(torch.linalg.cholesky(cov).float())


def _overrides(cfg: TrainConfig) -> dict:
    """Fields of ``cfg`` that differ from the defaults (so a resume keeps the checkpoint's other settings)."""
    base = TrainConfig()
    return {k: v for k, v in asdict(cfg).items() if getattr(base, k) != v}
