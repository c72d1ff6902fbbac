"""The style encoder's pieces: FFHQ alignment from five points, pairs made by the generator (resumable), and a
tiny training run that learns and resumes."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from difp_stream.faces.detect import Detector
from difp_stream.gan.encoder import EncoderConfig, StyleEncoder, ffhq_transform, to_tensor
from difp_stream.train.encoder import EncoderTrainConfig, EncoderTrainer, make_pairs


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    d = tmp_path_factory.mktemp("pairs")
    make_pairs(d, 3, per_shard=2, progress=False, backend="torch")
    return d


def test_pairs_are_rendered_once_and_resume_by_shard(pairs):
    shards = sorted(pairs.glob("shard_*.npz"))
    assert [s.name for s in shards] == ["shard_0000.npz", "shard_0001.npz"]
    d = np.load(shards[0])
    assert d["w"].shape == (2, 512) and d["img"].shape == (2, 256, 256, 3) and d["img"].dtype == np.uint8
    assert 0.5 <= d["psi"].min() and d["psi"].max() <= 1.0
    before = shards[0].stat().st_mtime_ns
    make_pairs(pairs, 3, per_shard=2, progress=False, backend="torch")  # nothing new to do
    assert shards[0].stat().st_mtime_ns == before


def test_ffhq_alignment_of_a_generated_face_is_nearly_the_identity(pairs):
    """The generator frames faces as FFHQ did; the 5-point recipe finds about the same square."""
    img = np.load(pairs / "shard_0000.npz")["img"][0]
    face = Detector(0.5, max_side=256).detect([img])[0][0]
    m = ffhq_transform(face.landmarks, 256)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    centre = m @ np.array([128, 128, 1.0])
    assert 0.85 < scale < 1.15 and np.abs(centre - 128).max() < 0.1 * 256


@pytest.mark.train
def test_tiny_encoder_learns_and_resumes(pairs, tmp_path):
    cfg = EncoderTrainConfig(steps=40, batch=4, lr=3e-3, eval_pairs=1, checkpoint_seconds=0, jitter=0.0)
    mcfg = EncoderConfig(size=32, channels=(8, 16), layer_rank=4)
    t = EncoderTrainer(pairs, tmp_path, cfg, mcfg, progress=False)
    before = float(t.loss(*t._batch()))
    t.run()
    after = float(t.loss(to_tensor(t.train_crops), torch.from_numpy(t.train_w)))
    assert after < 0.5 * before  # it fits its few pairs
    hist = [json.loads(x) for x in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert hist[-1]["step"] == 40 and "eval" in hist[-1]
    t2 = EncoderTrainer(pairs, tmp_path, EncoderTrainConfig(steps=45, batch=4, eval_pairs=1, checkpoint_seconds=0),
                        progress=False)
    assert t2.step == 40 and t2.model_cfg == mcfg  # resumed from the checkpoint, with its own configuration
    enc = StyleEncoder.load(tmp_path / "model")
    w = enc(to_tensor(t.train_crops[:2]))
    assert w.shape == (2, 23, 512)
    with pytest.raises(ValueError, match="crops"):
        enc(torch.zeros(1, 3, 64, 64))


def test_shipped_encoder_round_trip_on_a_generated_face_keeps_the_person():
    """A face the generator makes (not one it trained on: another seed), aligned from its detected five points,
    encoded and rendered again: the same person for dlib (< 0.6)."""
    from difp_stream.difp.identity import DlibIdentityEncoder
    from difp_stream.faces import align
    from difp_stream.gan.encoder import ffhq_crop, load_encoder
    from difp_stream.gan.mobilestylegan import load_generator, to_uint8

    gen, enc = load_generator(), load_encoder()
    det, ids = Detector(0.5, max_side=256), DlibIdentityEncoder()

    def code(img):
        f = max(det.detect([img])[0], key=lambda f: f.score)
        return ids(align.crop(img, align.similarity(f.landmarks, 128), 128)[None])[0], f.landmarks

    with torch.no_grad():
        wm = gen.mean_style(512)
        w = wm + 0.7 * (gen.mapping(torch.randn(1, 512, generator=torch.Generator().manual_seed(2024))) - wm)
        face = to_uint8(gen.synthesis(w, 256))[0]
        a, lms = code(face)
        rec = to_uint8(gen.synthesis(enc(to_tensor(ffhq_crop(face, lms, enc.cfg.size)[None])), 256))[0]
    b, _ = code(rec)
    assert float(np.linalg.norm(a - b)) < 0.6
