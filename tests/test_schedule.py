import pytest
import torch

from difp_stream.difp.schedule import FewStepDDIM, make_scheduler
from tests.conftest import tiny_config


@pytest.fixture
def ddim():
    return FewStepDDIM(make_scheduler(tiny_config()))


def test_timesteps_start_at_strength_and_end_at_zero(ddim):
    assert ddim.timesteps(4, 0.8) == [800, 600, 400, 200, 0]
    assert ddim.timesteps(2, 0.5) == [500, 250, 0]
    assert ddim.timesteps(1, 1.0)[0] == 999
    with pytest.raises(ValueError):
        ddim.timesteps(0, 0.8)


def test_step_matches_diffusers_ddim(ddim):
    sched = make_scheduler(tiny_config())
    sched.set_timesteps(5)  # stride 200: 800 -> 600
    z, eps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    ref = sched.step(eps, 800, z, eta=0.0).prev_sample
    assert torch.allclose(ddim.step(z, eps, 800, 600), ref, atol=1e-5)


def test_inversion_then_denoising_is_exact_for_a_fixed_noise_estimate(ddim):
    # with the same eps on both paths the DDIM update is invertible: it is the definition of the key
    z0, eps = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    ts = ddim.timesteps(4, 0.8)
    z = z0
    for t, up in zip(ts[::-1][:-1], ts[::-1][1:]):
        z = ddim.step(z, eps, t, up)
    for t, down in zip(ts[:-1], ts[1:]):
        z = ddim.step(z, eps, t, down)
    assert torch.allclose(z, z0, atol=1e-4)


def test_add_noise_levels(ddim):
    z0, n = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    assert torch.equal(ddim.add_noise(z0, n, 0), z0)
    noisy = ddim.add_noise(z0, n, 999)
    assert torch.corrcoef(torch.stack([noisy.flatten(), n.flatten()]))[0, 1] > 0.99
