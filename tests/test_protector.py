import dataclasses

import numpy as np
import pytest
import torch

from difp_stream.difp import Protector, SamplingConfig
from difp_stream.difp.protector import to_tensor
from difp_stream.metrics import psnr as _psnr




@pytest.fixture
def protector(tiny_model):
    return Protector(tiny_model, SamplingConfig(), device="cpu")


def test_protect_shapes_and_keys(protector, crops, id_codes):
    r = protector.protect(crops, seeds=[1, 2, 3], id_codes=id_codes)
    assert r.crops.shape == crops.shape and r.crops.dtype == np.uint8
    assert len(r.keys) == 3
    k = r.keys[0]
    assert k.z_ts.dtype == np.float16 and k.z_ts.shape == (4, 16, 16)
    assert k.id_code.shape == (128,) and k.style.shape == (2, 32)
    assert (k.steps, k.strength) == (4, 0.8)


def test_recovery_round_trip_reconstructs_latent_and_crop(protector, tiny_model, crops, id_codes):
    r = protector.protect(crops, seeds=5, id_codes=id_codes)
    z0 = tiny_model.encode(to_tensor(crops, 32, "cpu")).detach()
    z_rec = protector.recover_latents(r.keys)
    # the stored correction is fp16: the latent comes back to within fp16 rounding
    assert (z_rec - z0).abs().max().item() < 2e-2
    vae_only = ((tiny_model.decode(z0).detach() + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    assert _psnr(protector.recover(r.keys), vae_only) > 40.0


def test_recovery_without_correction_is_only_approximate(protector, crops, id_codes):
    # the few-step inversion alone is not exact; the correction is what makes recovery as good as the VAE
    r = protector.protect(crops, seeds=5, id_codes=id_codes)
    exact = protector.recover_latents(r.keys)
    for k in r.keys:
        k.correction = np.zeros_like(k.correction)
    approx = protector.recover_latents(r.keys)
    assert (approx - exact).abs().max().item() > 1e-3


def test_batch_equals_per_item(protector, crops, id_codes):
    seeds = [11, 12, 13]
    batch = protector.protect(crops, seeds=seeds, id_codes=id_codes)
    for i in range(3):
        one = protector.protect(crops[i:i + 1], seeds=[seeds[i]], id_codes=id_codes[i:i + 1])
        assert np.abs(one.crops[0].astype(int) - batch.crops[i].astype(int)).max() <= 1
        assert np.allclose(one.keys[0].z_ts, batch.keys[i].z_ts, atol=1e-2)
        assert np.allclose(one.surrogates[0], batch.surrogates[i])


def test_same_seed_same_output_different_seed_different_surrogate(protector, crops, id_codes):
    a = protector.protect(crops, seeds=7, id_codes=id_codes, keys=False)
    b = protector.protect(crops, seeds=7, id_codes=id_codes, keys=False)
    c = protector.protect(crops, seeds=8, id_codes=id_codes, keys=False)
    assert np.array_equal(a.crops, b.crops) and np.array_equal(a.surrogates, b.surrogates)
    assert not np.allclose(a.surrogates, c.surrogates)
    assert not np.array_equal(a.crops, c.crops)


def test_surrogate_is_far_from_original(protector, crops, id_codes):
    r = protector.protect(crops, seeds=3, id_codes=id_codes, keys=False)
    d = np.linalg.norm(r.surrogates - id_codes, axis=1)
    assert (d >= protector.sampling.min_surrogate_distance).all()


def test_bad_inputs_raise_clear_errors(protector, crops, id_codes):
    with pytest.raises(ValueError, match="shape"):
        protector.protect(crops[:, :16], id_codes=id_codes)
    with pytest.raises(TypeError, match="uint8"):
        protector.protect(crops.astype(np.float32), id_codes=id_codes)
    with pytest.raises(ValueError, match="empty"):
        protector.protect(crops[:0], id_codes=id_codes[:0])
    with pytest.raises(TypeError, match="numpy"):
        protector.protect(torch.zeros(1, 32, 32, 3), id_codes=id_codes[:1])
    with pytest.raises(ValueError, match="id_codes"):
        protector.protect(crops, id_codes=id_codes[:2])
    with pytest.raises(ValueError, match="seeds"):
        protector.protect(crops, seeds=[1], id_codes=id_codes)
    with pytest.raises(ValueError, match="identity_encoder"):
        protector.protect(crops)
    with pytest.raises(ValueError, match="no keys"):
        protector.recover([])
    with pytest.raises(ValueError, match="steps"):
        SamplingConfig(steps=0)


def test_adaptive_realism_and_schedules_recover(tiny_model, crops, id_codes):
    p = Protector(tiny_model, SamplingConfig(steps=2, strength=0.5, adaptive_realism=True), device="cpu")
    r = p.protect(crops, seeds=1, id_codes=id_codes)
    # keys carry their own schedule: a protector with other settings still recovers them
    q = Protector(tiny_model, SamplingConfig(steps=6), device="cpu")
    assert np.abs(q.recover(r.keys).astype(int) - p.recover(r.keys).astype(int)).max() <= 1


def test_model_save_load_round_trip(tmp_path, tiny_model, crops, id_codes):
    from difp_stream.difp import DIFPModel

    tiny_model.save(tmp_path / "m")
    loaded = DIFPModel.load(tmp_path / "m")
    a = Protector(tiny_model, device="cpu").protect(crops, seeds=1, id_codes=id_codes, keys=False).crops
    b = Protector(loaded, device="cpu").protect(crops, seeds=1, id_codes=id_codes, keys=False).crops
    assert _psnr(a, b) > 35  # fp16 storage
    with pytest.raises(FileNotFoundError, match="no DIFP model"):
        DIFPModel.load(tmp_path / "nothing")


def test_carry_follows_motion_and_recovers(protector, tiny_model, crops, id_codes):
    key = protector.protect(crops[:1], seeds=1, id_codes=id_codes[:1])
    moved = np.roll(crops[:1], 2, axis=2)
    r = protector.carry(moved, key.latents, key.protected_latents, cutoff=8)
    assert r.crops.shape == (1, 32, 32, 3) and r.keys[0].steps == 0
    # no motion: the keyframe's protected face comes back unchanged
    same = protector.carry(crops[:1], key.latents, key.protected_latents, cutoff=8)
    assert np.abs(same.crops.astype(int) - key.crops.astype(int)).max() <= 2
    # a carried key recovers the frame's own latent
    z = tiny_model.encode(to_tensor(moved, 32, "cpu"))
    assert (protector.recover_latents(r.keys) - z).abs().max() < 2e-2


def test_refined_keys_recover_closer_to_the_original(tiny_model, crops, id_codes):
    plain = Protector(tiny_model, SamplingConfig(), device="cpu")
    refined = Protector(tiny_model, SamplingConfig(), device="cpu", key_refine=8)
    a = plain.protect(crops, seeds=2, id_codes=id_codes)
    b = refined.protect(crops, seeds=2, id_codes=id_codes)
    assert np.array_equal(a.crops, b.crops)  # the protected face does not change, only what the key holds
    err = lambda r: np.mean((r.astype(float) - crops.astype(float)) ** 2)  # noqa: E731
    assert err(refined.recover(b.keys)) < 0.9 * err(plain.recover(a.keys))
    carried = refined.carry(crops, b.latents, b.protected_latents, cutoff=4)
    assert err(refined.recover(carried.keys)) < 0.9 * err(plain.recover(plain.carry(crops, a.latents, a.protected_latents, cutoff=4).keys))


def test_surrogate_spread_scales_how_far_apart_fake_identities_are():
    from difp_stream.difp.surrogate import sample_surrogates

    orig = torch.zeros(4, 128)
    mean, chol = torch.zeros(128), torch.eye(128) * 0.1
    draw = lambda seeds, spread: sample_surrogates(orig, seeds, mean, chol, 0.0, spread=spread)  # noqa: E731
    base = (draw([1, 2, 3, 4], 1.0) - draw([5, 6, 7, 8], 1.0)).norm(dim=1)
    wide = (draw([1, 2, 3, 4], 1.5) - draw([5, 6, 7, 8], 1.5)).norm(dim=1)
    assert torch.allclose(wide, 1.5 * base, rtol=1e-5)
    with pytest.raises(ValueError, match="surrogate_spread"):
        SamplingConfig(surrogate_spread=0)


class _CountingNet:
    """The model as a backend, recording the batch size of every U-Net call."""

    def __init__(self, model):
        self.model, self.batches = model, []

    def eps(self, z, t, ctx):
        self.batches.append(z.shape[0])
        return self.model.eps(z, t, ctx)

    def __getattr__(self, name):
        return getattr(self.model, name)


def test_fewer_inversion_steps_ride_along_and_still_recover(tiny_model, crops, id_codes):
    net = _CountingNet(tiny_model)
    p = Protector(tiny_model, SamplingConfig(steps=4, inversion_steps=2), device="cpu", backend=net)
    r = p.protect(crops, seeds=3, id_codes=id_codes)
    n = len(crops)
    # 2 inversion calls, then 4 guided calls of 3 branches; the key branch joins only at the key's 2 levels
    assert net.batches == [n, n, 4 * n, 3 * n, 4 * n, 3 * n]
    assert all(k.steps == 2 for k in r.keys)
    z0 = tiny_model.encode(to_tensor(crops, 32, "cpu")).detach()
    assert (p.recover_latents(r.keys) - z0).abs().max().item() < 2e-2
    # keys do not change the protected face
    assert np.array_equal(p.protect(crops, seeds=3, id_codes=id_codes, keys=False).crops, r.crops)
    with pytest.raises(ValueError, match="inversion steps"):
        Protector(tiny_model, SamplingConfig(steps=4, inversion_steps=3), device="cpu")
    # a model's recommended inversion steps give way when they do not divide the steps asked for
    cfg = dataclasses.replace(tiny_model.cfg, sampling={"inversion_steps": 2})
    assert [cfg.sampling_config(steps=k).inversion_steps for k in (None, 3, 6)] == [2, 0, 2]
    assert cfg.sampling_config(steps=3, inversion_steps=1).inversion_steps == 1


def test_start_noise_makes_seeds_start_apart_and_keeps_keys(tiny_model, crops, id_codes):
    sur = np.zeros((len(crops), 128), np.float32)  # same surrogate for both seeds: only the start differs
    plain = Protector(tiny_model, SamplingConfig(), device="cpu")
    noisy = Protector(tiny_model, SamplingConfig(start_noise=0.6), device="cpu")
    a, b = (plain.protect(crops, seeds=s, id_codes=id_codes, surrogates=sur) for s in (1, 2))
    c, d = (noisy.protect(crops, seeds=s, id_codes=id_codes, surrogates=sur) for s in (1, 2))
    gap = lambda u, v: np.abs(u.crops.astype(int) - v.crops.astype(int)).mean()  # noqa: E731
    assert gap(c, d) > 2 * gap(a, b) + 1
    assert np.array_equal(noisy.recover(c.keys), plain.recover(a.keys))  # the key does not see the start noise
    with pytest.raises(ValueError, match="start_noise"):
        SamplingConfig(start_noise=1.5)


def test_fingerprint_names_the_network_not_its_recommended_sampling(tiny_model):
    before, kept = tiny_model.fingerprint(), tiny_model.cfg.sampling
    try:
        tiny_model.cfg.sampling = {"start_noise": 0.3, "inversion_steps": 2}
        assert tiny_model.fingerprint() == before  # keys and engines do not depend on these
    finally:
        tiny_model.cfg.sampling = kept
    with torch.no_grad():
        w = next(iter(tiny_model.parameters()))
        w += 0.5
        after = tiny_model.fingerprint()
        w -= 0.5
    assert after != before


def test_keys_at_a_higher_resolution_recover_the_larger_crop(tiny_model, crops, id_codes):
    big = np.random.default_rng(3).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    p = Protector(tiny_model, SamplingConfig(inversion_steps=2), device="cpu", key_resolution=64)
    r = p.protect(crops, seeds=4, id_codes=id_codes, key_crops=big)
    base = Protector(tiny_model, SamplingConfig(inversion_steps=2), device="cpu")
    plain = base.protect(crops, seeds=4, id_codes=id_codes)
    assert np.array_equal(r.crops, plain.crops)  # the protected face does not change
    assert r.keys[0].z_ts.shape == (4, 16, 16) and r.keys[0].correction.shape == (4, 32, 32)
    zb = tiny_model.encode(to_tensor(big, 64, "cpu")).detach()
    assert (p.recover_latents(r.keys) - zb).abs().max().item() < 2e-2
    vae_big = ((tiny_model.decode(zb).detach() + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    rec = p.recover(r.keys)
    assert rec.shape == (3, 64, 64, 3) and _psnr(rec, vae_big) > 40
    # carried frames: the clean latent plus the correction at key resolution
    c = p.carry(crops, r.latents, r.protected_latents, cutoff=4, key_crops=big)
    assert c.keys[0].steps == 0 and (p.recover_latents(c.keys) - zb).abs().max().item() < 2e-2
    with pytest.raises(ValueError, match="different key resolutions"):
        p.recover([r.keys[0], plain.keys[0]])
    with pytest.raises(ValueError, match="needs key_crops"):
        p.protect(crops, seeds=4, id_codes=id_codes)
    with pytest.raises(ValueError, match="not a multiple"):
        Protector(tiny_model, device="cpu", key_resolution=48)
