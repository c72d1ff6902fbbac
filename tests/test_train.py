import json

import numpy as np
import pytest
import torch

from difp_stream.cli import main
from difp_stream.difp import DIFPModel
from difp_stream.train import FaceSet, TrainConfig, Trainer
from tests.conftest import tiny_config

pytestmark = pytest.mark.train


def _faces(n=24, res=32):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:res, 0:res] / res
    imgs = []
    for i in range(n):  # smooth face-like blobs with varying tone: learnable in a few steps
        c = rng.uniform(0.3, 0.9, 3)
        blob = np.exp(-((xx - 0.5) ** 2 + (yy - 0.55) ** 2) / rng.uniform(0.05, 0.12))
        imgs.append((255 * np.clip(blob[..., None] * c + 0.1, 0, 1)).astype(np.uint8))
    ids = np.arange(n) % 6
    desc = rng.normal(size=(6, 128)).astype(np.float32)[ids] * 0.1
    return FaceSet(np.stack(imgs), ids, [str(i) for i in range(6)], desc, [f"{i}.jpg" for i in range(n)])


def test_two_stage_training_decreases_loss_and_resumes(tmp_path):
    torch.manual_seed(0)
    cfg = TrainConfig(vae_steps=12, stage1_steps=6, stage2_steps=6, decoder_steps=3, batch_vae=8, batch_unet=8,
                      lr_vae=2e-3, lr_unet=1e-3, checkpoint_seconds=0.0)
    t = Trainer(_faces(), tmp_path, tiny_config(), cfg, progress=False, log=lambda m: None)
    model = t.run()
    hist = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    vae = [h["loss"] for h in hist if h["phase"] == "vae"]
    assert vae[-1] < vae[0]
    assert {h["phase"] for h in hist} == {"vae", "unet1", "unet2", "decoder"}
    assert model.is_trained and (tmp_path / "model" / "difp.safetensors").is_file()
    loaded = DIFPModel.load(tmp_path / "model")
    assert loaded.is_trained and abs(loaded.cfg.latent_scale - model.cfg.latent_scale) < 1e-6
    # the surrogate distribution was fitted to the training identities
    assert not torch.allclose(loaded.id_chol, torch.eye(128) * 0.1)
    # a finished run restarts at a chosen phase
    t2 = Trainer(_faces(), tmp_path, progress=False, log=lambda m: None, from_phase="unet2")
    assert (t2.phase, t2.step) == ("unet2", 0)


def test_decoder_phase_keeps_the_latent_space(tmp_path):
    """The decoder fine-tune changes only the decoder: the encoder (the U-Net's latent space) stays bit-identical."""
    torch.manual_seed(0)
    cfg = TrainConfig(vae_steps=6, stage1_steps=1, stage2_steps=1, decoder_steps=0, batch_vae=8, batch_unet=8,
                      lr_vae=2e-3, checkpoint_seconds=0.0)
    Trainer(_faces(), tmp_path / "a", tiny_config(), cfg, progress=False, log=lambda m: None).run()
    before = DIFPModel.load(tmp_path / "a" / "model")
    cfg2 = TrainConfig(decoder_steps=15, batch_vae=8, lr_decoder=2e-3, checkpoint_seconds=0.0)
    t = Trainer(_faces(), tmp_path / "b", train_cfg=cfg2, init_model=tmp_path / "a" / "model", progress=False,
                log=lambda m: None, from_phase="decoder")
    after = t.run()
    b, a = before.state_dict(), after.state_dict()
    enc = [k for k in b if k.startswith(("vae.encoder.", "vae.quant_conv.", "unet."))]
    dec = [k for k in b if k.startswith("vae.decoder.")]
    assert enc and all(torch.equal(b[k], a[k].to(b[k].dtype)) for k in enc)
    assert any(not torch.equal(b[k], a[k].to(b[k].dtype)) for k in dec)
    hist = [json.loads(line) for line in (tmp_path / "b" / "history.jsonl").read_text().splitlines()]
    d = [h for h in hist if h["phase"] == "decoder"]
    assert d[-1]["loss"] < d[0]["loss"] and "eval_psnr" in d[-1]


def test_unet_loss_decreases_over_a_few_steps(tmp_path):
    torch.manual_seed(0)
    cfg = TrainConfig(vae_steps=2, stage1_steps=30, stage2_steps=1, decoder_steps=0, batch_vae=8, batch_unet=16,
                      lr_unet=2e-3, checkpoint_seconds=0.0)
    Trainer(_faces(), tmp_path, tiny_config(), cfg, progress=False, log=lambda m: None).run()
    hist = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    u = [h["loss"] for h in hist if h["phase"] == "unet1"]
    assert np.mean(u[-5:]) < np.mean(u[:5])


def test_train_cli_reads_a_manifest_folder(tmp_path):
    import cv2

    faces = _faces(12, 32)
    root = tmp_path / "data"
    (root / "c").mkdir(parents=True)
    rows = ["file\tidentity\tsplit"]
    for i, img in enumerate(faces.images):
        cv2.imwrite(str(root / "c" / f"{i}.png"), img[:, :, ::-1])
        rows.append(f"c/{i}.png\tp{i % 3}\t{'train' if i < 10 else 'eval'}")
    (root / "manifest.tsv").write_text("\n".join(rows) + "\n")
    np.save(root / "dlib_descriptors.npy", faces.descriptors.astype(np.float16))
    out = tmp_path / "run"
    with pytest.raises(SystemExit):  # the default model is 64 px: a 32 px folder needs --resolution
        main(["train", str(root), "--out", str(out), "--resolution", "48x"])
    code = main(["train", str(root), "--out", str(out), "--resolution", "32", "--vae-steps", "2",
                 "--stage1-steps", "1", "--stage2-steps", "1", "--decoder-steps", "1", "--batch-vae", "4",
                 "--batch-unet", "4",
                 "--no-progress", "--cache", str(tmp_path / "cache")])
    assert code == 0 and (out / "model" / "config.json").is_file()


def test_phase_minutes_cuts_a_phase_to_the_time_it_is_given(tmp_path):
    """A short GPU lease: each phase is cut, 20 steps in, to what fits its minutes, and the cut survives a resume."""
    torch.manual_seed(0)
    cfg = TrainConfig(vae_steps=100_000, stage1_steps=0, stage2_steps=0, decoder_steps=0, batch_vae=4,
                      checkpoint_seconds=1e9, phase_minutes=0.002)  # 0.12 s
    logs = []
    t = Trainer(_faces(8), tmp_path, tiny_config(), cfg, progress=False, log=logs.append)
    t.run()
    assert any("vae_steps cut to" in m for m in logs)
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert 20 < ck["train_cfg"]["vae_steps"] < 100_000 and ck["phase"] == "done"
