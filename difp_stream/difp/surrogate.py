"""Surrogate identities: identity codes of nobody, drawn from a Gaussian fitted to the training embeddings."""
from __future__ import annotations

from typing import Sequence

import torch


def sample_surrogates(original: torch.Tensor, seeds: Sequence[int], mean: torch.Tensor, chol: torch.Tensor,
                      min_distance: float, tries: int = 64, spread: float = 1.0) -> torch.Tensor:
    """For each original code ``[N, D]`` draw ``mean + spread * chol @ n`` from its own seed until the draw is at
    least ``min_distance`` (L2) from the original; when no draw of ``tries`` qualifies, the farthest one is used.
    ``spread`` > 1 draws more distinctive people than the training set's average spread (two seeds differ more).
    Reproducible: the same (original, seed) gives the same surrogate on every device."""
    if original.ndim != 2 or original.shape[0] != len(seeds):
        raise ValueError(f"need one seed per identity code, got codes {tuple(original.shape)} and {len(seeds)} seeds")
    mean_c, chol_c = mean.detach().float().cpu(), chol.detach().float().cpu()
    out = []
    for code, seed in zip(original.detach().float().cpu(), seeds):
        g = torch.Generator().manual_seed(int(seed) & 0xFFFF_FFFF_FFFF)
        cand = mean_c + spread * (torch.randn(tries, mean_c.numel(), generator=g) @ chol_c.T)
        d = (cand - code).norm(dim=1)
        ok = (d >= min_distance).nonzero().flatten()
        out.append(cand[ok[0]] if len(ok) else cand[d.argmax()])
    return torch.stack(out).to(device=original.device, dtype=original.dtype)
