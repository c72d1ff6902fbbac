"""Realism control (paper Eq. 12-14): pin the low frequencies of the sample to those of the reference."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def cutoff_size(g_rea: float, size: int, k: float) -> int:
    """``H = -g_rea (M - 1) + (M + k)``, rounded and kept in ``[1, M]``; larger ``g_rea`` -> smaller ``H``."""
    h = -g_rea * (size - 1) + (size + k)
    return int(min(size, max(1, round(h))))


def lowpass(z: torch.Tensor, h: int) -> torch.Tensor:
    """Linear low-pass ``LP_H``: resize ``[.., M, M]`` down to ``H x H`` (anti-aliased) and back up (bilinear)."""
    m = z.shape[-1]
    if h >= m:
        return z
    small = F.interpolate(z, size=(h, h), mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(small, size=z.shape[-2:], mode="bilinear", align_corners=False)


def realism_step(z: torch.Tensor, ref_noised: torch.Tensor, h: int | torch.Tensor) -> torch.Tensor:
    """``z - LP_H(z) + LP_H(ref)``; ``h`` may be one size or one per item."""
    if isinstance(h, int):
        return z - lowpass(z, h) + lowpass(ref_noised, h)
    out = torch.empty_like(z)
    for hv in torch.unique(h).tolist():
        idx = (h == hv).nonzero().flatten()
        out[idx] = z[idx] - lowpass(z[idx], int(hv)) + lowpass(ref_noised[idx], int(hv))
    return out


def global_ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SSIM per item with one window over the whole latent. Latents are centred near zero with no fixed range, so
    only SSIM's contrast-structure factor ``(2 cov + C2) / (var_a + var_b + C2)`` is used (the luminance factor is
    unstable there: two sign-flipped latents would score 1)."""
    a, b = a.flatten(1), b.flatten(1)
    va, vb = a.var(1, unbiased=False), b.var(1, unbiased=False)
    cov = ((a - a.mean(1, keepdim=True)) * (b - b.mean(1, keepdim=True))).mean(1)
    c2 = 9e-4
    return (2 * cov + c2) / (va + vb + c2)


def adaptive_g(ssim: torch.Tensor, g_lo: float = 0.5, g_hi: float = 0.7) -> torch.Tensor:
    """Eq. 14 in the form difp-stream uses: the closer the step's prediction already is to the reference (SSIM
    near 1), the larger ``g_rea`` (fewer frequencies pinned); a prediction drifting away gets more of them pinned.
    The range is the paper's best interval 0.5-0.7."""
    return g_lo + (g_hi - g_lo) * ssim.clamp(0, 1)
