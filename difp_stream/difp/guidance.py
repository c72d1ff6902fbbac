"""Dual classifier-free guidance (paper Eq. 10)."""
from __future__ import annotations

import torch


def dual_guidance(eps_uncond: torch.Tensor, eps_id: torch.Tensor, eps_sty: torch.Tensor,
                  s_id: float, s_sty: float) -> torch.Tensor:
    """``eps(∅,∅) + s_id (eps(id,∅) - eps(∅,∅)) + s_sty (eps(∅,sty) - eps(∅,∅))``."""
    return eps_uncond + s_id * (eps_id - eps_uncond) + s_sty * (eps_sty - eps_uncond)
