"""DIFP in the generator's style space, on a tiny configuration: shapes, realism control over layers, dual guidance,
inversion -> recovery round trip through the Protector, keys, and a training run that learns and resumes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from difp_stream.difp.protector import Protector
from difp_stream.difp.stylespace import StyleDIFP, StyleModelConfig
from difp_stream.gan.encoder import load_encoder
from difp_stream.gan.mobilestylegan import load_generator, to_uint8
from difp_stream.metrics import psnr

from .conftest import FACES, needs

TINY = dict(width=64, depth=1, basis_rank=32, token_dim=16, render_size=128)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = StyleDIFP(StyleModelConfig(**TINY), load_encoder(), load_generator())
    q, _ = torch.linalg.qr(torch.randn(23 * 512, 32))
    m.denoiser.basis.copy_(q.T)  # an untrained model on a random subspace, but one whose eps is not zero there
    for b in [*m.denoiser.blocks, m.denoiser]:  # zero-initialised outputs made random: conditions now matter
        torch.nn.init.normal_((b.fc2 if hasattr(b, "fc2") else b.out).weight, std=0.05)
    return m.eval()


@pytest.fixture(scope="module")
def face(model):
    """A generated face (FFHQ framing) at the encoder's input size."""
    with torch.no_grad():
        w = model.generator.mapping(torch.randn(1, 512, generator=torch.Generator().manual_seed(5)))
        return to_uint8(model.generator.synthesis(w, 128))


def test_shapes(model, face):
    x = torch.from_numpy(face).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        z = model.encode(x)
        assert z.shape == (1, 23, 512)
        ctx = model.context(model.id_tokens(torch.zeros(1, 128)), model.style_tokens(x), 1)
        assert ctx.shape == (1, 4, 16)
        assert model.eps(z, 500, ctx).shape == z.shape
        assert model.decode(z).shape == (1, 3, 128, 128)
        assert torch.allclose(model.to_styles(model.to_latent(z)), z, atol=1e-5)


def test_realism_control_pins_coarse_and_fine_layers(model):
    c = model.cfg
    few, many = model.pinned(0.9, -1.0), model.pinned(0.3, -1.0)
    assert few.sum() < many.sum()  # larger g_rea: fewer layers pinned (the paper's rule for H)
    assert few[0] and many[0] and not few[c.pin_fine_from - 1]
    assert few[c.pin_fine_from:].all() and many[c.pin_fine_from:].all()  # colour and light always from the original
    z, ref = torch.randn(2, 23, 512), torch.randn(2, 23, 512)
    out = model.pin(z, ref, 0.6, -1.0)
    m = model.pinned(0.6, -1.0)
    assert torch.equal(out[:, m], ref[:, m]) and torch.equal(out[:, ~m], z[:, ~m])
    per_item = model.pin(z, ref, torch.tensor([0.9, 0.3]), -1.0)
    assert torch.equal(per_item[0], model.pin(z[:1], ref[:1], 0.9, -1.0)[0])
    assert torch.equal(per_item[1], model.pin(z[1:], ref[1:], 0.3, -1.0)[0])


def test_protect_recover_round_trip(model, face):
    p = Protector(model, model.cfg.sampling_config(steps=2, strength=0.6), device="cpu")
    ids = np.zeros((1, 128), np.float32)
    r = p.protect(face, seeds=[7], id_codes=ids)
    assert r.crops.shape == (1, 128, 128, 3) and r.keys[0].z_ts.shape == (23, 512)
    again = p.protect(face, seeds=[7], id_codes=ids)
    assert np.array_equal(r.crops, again.crops)  # seeded: the same fake for the same seed
    with torch.no_grad():
        z0 = r.latents
        rec = p.recover_latents(r.keys)
        assert float((rec - z0).abs().max()) < 0.02  # fp16 key: the original's latent comes back
        assert psnr(p.recover(r.keys)[0], to_uint8(model.decode(z0))[0]) > 35
    # guidance moves the sample: no guidance (s_id = s_sty = 0) gives another latent
    flat = Protector(model, model.cfg.sampling_config(steps=2, strength=0.6, s_id=0.0, s_sty=0.0), device="cpu")
    assert float((flat.protect(face, seeds=[7], id_codes=ids, keys=False).protected_latents
                  - r.protected_latents).norm()) > 1e-3


@needs(FACES)
@pytest.mark.train
def test_training_learns_and_resumes(tmp_path):
    from difp_stream.train.stylespace import StyleDIFPTrainer, StyleTrainConfig, build_latents

    path = build_latents(FACES, tmp_path, limit=24, progress=False)
    d = np.load(path)
    assert d["w_plus"].shape == (24, 23, 512) and d["ids"].shape == (24, 128) and d["thumbs"].shape == (24, 16, 16, 3)
    cfg = StyleTrainConfig(stage1_steps=150, stage2_steps=50, batch=16, lr=2e-3, eval_every=1000, eval_count=8)
    t = StyleDIFPTrainer(tmp_path, cfg, StyleModelConfig(**TINY), progress=False)
    w, ids, thumbs = t.train

    def fixed_loss():
        with torch.no_grad():
            return float(t.loss(w[:16], ids[:16], thumbs[:16], drop=False, gen=torch.Generator().manual_seed(9),
                                subspace=True))

    before = fixed_loss()
    t.fit()
    assert t.step == 200 and fixed_loss() < 0.97 * before  # eps of a Gaussian-like set: near 1 at best
    assert (tmp_path / "model" / "difp.safetensors").exists()
    t2 = StyleDIFPTrainer(tmp_path, cfg, StyleModelConfig(**TINY), progress=False)
    assert t2.step == 200
    loaded = StyleDIFP.load(tmp_path / "model")
    assert loaded.is_trained and loaded.cfg.width == 64


@needs(FACES)
def test_render_labels_describe_what_a_latent_renders(tmp_path):
    from difp_stream.gan.encoder import load_encoder
    from difp_stream.train.stylespace import build_latents, render_codes

    d = np.load(build_latents(FACES, tmp_path, limit=3, progress=False, labels="render"))
    w = torch.from_numpy(d["w_plus"].astype(np.float32))
    assert d["ids"].shape == (3, 128) and load_encoder().cfg.size == 128
    lms = np.tile(np.array([[46.3, 59.7], [81.5, 59.5], [64.0, 79.7], [49.5, 100.4], [78.7, 100.2]], np.float32),
                  (3, 1, 1))
    again = render_codes(w, lms)
    assert np.allclose(again[0], render_codes(w[:1], lms[:1])[0], atol=1e-4)  # deterministic
    assert np.linalg.norm(again[0] - again[1]) > 0.3  # two people, two codes


def test_pipeline_keeps_one_fake_per_track_renders_every_other_frame_and_keys_every_frame(model):
    """The frame pipeline with a (tiny) style-space model: one DIFP run for the track, then every frame carried
    from it (no second run); carried frames rendered every 2nd frame (the others reuse the last face, warped into
    place) at the face's size in the frame; a key for every frame, with the face region's pixels (faithful)."""
    import cv2

    from difp_stream.difp.identity import DlibIdentityEncoder
    from difp_stream.pipeline import FaceProtector, PipelineConfig
    from difp_stream.video.synthetic import astronaut

    img = astronaut()
    frames = [cv2.warpAffine(img, np.float32([[1, 0, 3 * i], [0, 1, 2 * i]]), img.shape[1::-1],
                             borderMode=cv2.BORDER_REFLECT) for i in range(6)]
    records = []
    p = Protector(model, model.cfg.sampling_config(steps=2, strength=0.6), device="cpu")
    fp = FaceProtector(p, DlibIdentityEncoder(), PipelineConfig(keys=True, exact=True, pixels_quality=75,
                                                                 verify_distance=0.0, skip_below=0.0),
                       on_key=records.append)
    outs = [fp.process(i, f) for i, f in enumerate(frames)]
    assert fp.stats.protected == 6 and fp.stats.carried == 5 and fp.stats.obscured == 0
    assert len(fp.timings.ms["difp"]) == 1  # one DIFP run for the whole track
    assert len(fp.timings.ms["carry"]) == 2 and len(fp.timings.ms["carry: keys"]) == 3  # rendered (2, 4) / held
    assert p.render_size == 256  # the astronaut's FFHQ crop spans ~175 px of the frame
    assert [r.frame_index for r in records] == list(range(6)) and all(r.exact is not None for r in records)
    assert all(not np.array_equal(o, f) for o, f in zip(outs, frames))  # every frame's face replaced
