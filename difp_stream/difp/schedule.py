"""Few-step deterministic DDIM on top of a diffusers noise schedule (forward, inversion, noising).

The schedule (betas, alphas_cumprod) comes from a diffusers scheduler, so any scheduler that exposes
``alphas_cumprod`` can be swapped in; the update itself is the standard DDIM one (METHOD.md):
``x0 = (z_t - sqrt(1 - a_t) eps) / sqrt(a_t)``, ``z_s = sqrt(a_s) x0 + sqrt(1 - a_s) eps``, which runs forward
(``s < t``, denoising) and backward (``s > t``, DDIM inversion) alike.
"""
from __future__ import annotations

import torch
from diffusers import DDIMScheduler

from .config import ModelConfig


def make_scheduler(cfg: ModelConfig) -> DDIMScheduler:
    return DDIMScheduler(
        num_train_timesteps=cfg.train_timesteps,
        beta_start=cfg.beta_start,
        beta_end=cfg.beta_end,
        beta_schedule=cfg.beta_schedule,
        clip_sample=False,
        set_alpha_to_one=True,
    )


class FewStepDDIM:
    """Timesteps from ``t_s = S_n * T`` down to 0 in ``steps`` equal strides; level 0 is the clean latent."""

    def __init__(self, scheduler: DDIMScheduler):
        self.scheduler = scheduler
        self.T = scheduler.config.num_train_timesteps
        ac = scheduler.alphas_cumprod.to(torch.float64)
        # level 0 means "clean" (abar = 1): the start of inversion and the end of sampling
        self.abar = torch.cat([torch.ones(1, dtype=torch.float64), ac[1:]])

    def timesteps(self, steps: int, strength: float) -> list[int]:
        """Descending levels ``[t_s, ..., 0]`` (``steps + 1`` entries)."""
        if steps < 1:
            raise ValueError("steps must be >= 1")
        t_s = min(self.T - 1, int(round(strength * self.T)))
        ts = torch.linspace(t_s, 0, steps + 1).round().long().tolist()
        if len(set(ts)) != len(ts):
            raise ValueError(f"{steps} steps do not fit below t_s={t_s}")
        return ts

    def a(self, t: int, like: torch.Tensor) -> torch.Tensor:
        return self.abar[t].to(device=like.device, dtype=like.dtype)

    def step(self, z: torch.Tensor, eps: torch.Tensor, t: int, t_next: int) -> torch.Tensor:
        """Deterministic DDIM move from level ``t`` to ``t_next`` (either direction) with noise estimate ``eps``."""
        a_t, a_n = self.a(t, z), self.a(t_next, z)
        x0 = (z - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        return a_n.sqrt() * x0 + (1 - a_n).sqrt() * eps

    def predict_x0(self, z: torch.Tensor, eps: torch.Tensor, t: int) -> torch.Tensor:
        a_t = self.a(t, z)
        return (z - (1 - a_t).sqrt() * eps) / a_t.sqrt()

    def add_noise(self, z0: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
        a_t = self.a(t, z0)
        return a_t.sqrt() * z0 + (1 - a_t).sqrt() * noise
