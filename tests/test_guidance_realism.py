import math

import numpy as np
import torch

from difp_stream.difp import Protector, SamplingConfig
from difp_stream.difp.guidance import dual_guidance
from difp_stream.difp.realism import adaptive_g, cutoff_size, global_ssim, lowpass, realism_step


def test_dual_guidance_equals_direct_formula():
    g = torch.Generator().manual_seed(0)
    u, i, s = (torch.randn(2, 4, 8, 8, generator=g) for _ in range(3))
    out = dual_guidance(u, i, s, 3.0, 1.5)
    direct = u + 3.0 * (i - u) + 1.5 * (s - u)
    assert torch.allclose(out, direct)
    assert torch.allclose(dual_guidance(u, i, s, 0.0, 0.0), u)
    assert torch.allclose(dual_guidance(u, i, s, 1.0, 0.0), i, atol=1e-6)


def test_lowpass_removes_high_frequencies_and_keeps_the_mean():
    yy, xx = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    checker = ((yy + xx) % 2).float()[None, None] * 2 - 1  # the highest frequency
    assert lowpass(checker, 4).abs().max() < 0.05
    smooth = torch.sin(xx.float() / 16 * math.pi)[None, None] + 3.0
    z = smooth + 0.5 * checker
    lp = lowpass(z, 4)
    assert abs(lp.mean().item() - z.mean().item()) < 0.02
    assert (lp - smooth).abs().mean() < 0.15  # the slow part survives
    assert torch.equal(lowpass(z, 16), z)


def test_cutoff_monotone_in_g_rea():
    hs = [cutoff_size(g, 16, -3.0) for g in np.linspace(0, 1, 21)]
    assert all(a >= b for a, b in zip(hs, hs[1:]))
    assert hs[0] > hs[-1]
    assert cutoff_size(0.6, 16, -3.0) == 4
    assert all(1 <= h <= 16 for h in hs)


def test_realism_step_pins_low_frequencies_to_reference():
    g = torch.Generator().manual_seed(0)
    z, ref = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 4, 16, 16, generator=g)
    out = realism_step(z, ref, 4)
    # LP_H (down, then up) is not an exact projection, so the pinning is approximate but strong
    before = (lowpass(z, 4) - lowpass(ref, 4)).norm()
    after = (lowpass(out, 4) - lowpass(ref, 4)).norm()
    assert after < 0.4 * before
    # the high frequencies are the sample's own, not the reference's
    hi = lambda v: v - lowpass(v, 4)  # noqa: E731
    assert (hi(out) - hi(z)).norm() < 0.3 * (hi(out) - hi(ref)).norm()
    per_item = realism_step(z, ref, torch.tensor([4, 8]))
    assert torch.allclose(per_item[0], out[0]) and torch.allclose(per_item[1], realism_step(z, ref, 8)[1])


def test_adaptive_g_tracks_ssim():
    a = torch.randn(3, 4, 8, 8)
    s = global_ssim(a, torch.stack([a[0], a[1] + 0.5 * torch.randn(4, 8, 8), -a[2]]))
    assert s[0] > 0.99 and s[0] > s[1] > 0.5 > s[2]
    g = adaptive_g(s)
    assert g[0] > g[1] > g[2] and 0.5 <= g.min() and g.max() <= 0.7


def test_protect_runs_the_three_guidance_branches_in_one_unet_call(tiny_model, crops, id_codes):
    batches = []
    hook = tiny_model.unet.register_forward_hook(lambda m, a, kw: batches.append(a[0].shape[0]))
    try:
        Protector(tiny_model, SamplingConfig(steps=3), device="cpu").protect(crops, seeds=1, id_codes=id_codes, keys=False)
    finally:
        hook.remove()
    # the inversion (one batch of N per step), then one U-Net call of 3N per denoising step
    assert batches == [len(crops)] * 3 + [3 * len(crops)] * 3
