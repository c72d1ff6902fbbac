"""Training the style encoder on faces the generator makes: pairs (style -> picture), re-aligned from their five
landmarks as real faces are, then a regression of the style from the picture. Resumable: shards are written once,
``checkpoint.pt`` every few minutes, the model folder (``model/encoder.*``) with it.

    difp-stream encoder pairs RUN/pairs --count 20000        # the generator's faces (resumes by shard)
    difp-stream encoder train RUN/pairs --out RUN            # trains, resumes, writes RUN/model
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from ..gan.encoder import EncoderConfig, StyleEncoder, ffhq_crop, to_tensor
from .loop import clipped_step
from ..faces.detect import Detector
from ..gan.mobilestylegan import load_generator, to_uint8
from ..runtime.generator import renderer

PAIR_SIZE = 256  # pictures are kept at this size


def make_pairs(out: str | Path, count: int, per_shard: int = 250, psi: tuple[float, float] = (0.5, 1.0),
               generator=None, progress: bool = True, backend: str = "auto") -> list[Path]:
    """Render ``count`` faces from random styles pulled toward the mean by a random factor in ``psi`` (the
    truncation trick: fewer artefacts) into ``shard_NNNN.npz`` (w [N, 512], img [N, 256, 256, 3] uint8, psi).
    Existing shards are kept (a run resumes). ``backend``: where the faces are rendered (``auto``: OpenVINO when
    installed, 2.7x faster than PyTorch on a CPU, else PyTorch)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    g = generator or load_generator()
    if backend == "auto":
        try:
            import openvino  # noqa: F401

            backend = "openvino"
        except ImportError:
            backend = "torch"
    render = renderer(g, PAIR_SIZE, backend)
    mean_path = out / "w_mean.npy"
    if not mean_path.exists():
        np.save(mean_path, g.mean_style().numpy()[None])
    wmean = torch.from_numpy(np.load(mean_path)[0])
    shards = []
    bar = tqdm(total=count, desc="pairs", unit="face", disable=not progress)
    for k in range(-(-count // per_shard)):
        path = out / f"shard_{k:04d}.npz"
        n = min(per_shard, count - k * per_shard)
        if not path.exists():
            r = np.random.default_rng(k)
            ws, imgs, psis = [], [], []
            with torch.no_grad():
                for _ in range(n):
                    w = g.mapping(torch.from_numpy(r.standard_normal((1, 512)).astype(np.float32)))
                    p = float(r.uniform(*psi))
                    w = wmean + p * (w - wmean)
                    imgs.append(to_uint8(torch.from_numpy(render(w.numpy())))[0])
                    ws.append(w[0].numpy())
                    psis.append(p)
                    bar.update(1)
            tmp = path.with_name(path.stem + ".partial.npz")
            np.savez(tmp, w=np.array(ws, np.float32), img=np.array(imgs), psi=np.array(psis, np.float32))
            tmp.replace(path)
        else:
            bar.update(n)
        shards.append(path)
    bar.close()
    return shards


def align_shard(shard: Path, size: int, detector) -> Path:
    """Re-align a shard's faces from their detected five points (as real faces are), cached beside it:
    ``aligned{size}_NNNN.npz`` (crops, w). Faces the detector misses are left out."""
    out = shard.with_name(f"aligned{size}_{shard.stem.split('_')[-1]}.npz")
    if out.exists():
        return out
    d = np.load(shard)
    crops, ws = [], []
    for img, w in zip(d["img"], d["w"]):
        faces = detector.detect([img])[0]
        if not faces:
            continue
        f = max(faces, key=lambda f: f.score)
        crops.append(ffhq_crop(img, f.landmarks, size))
        ws.append(w)
    tmp = out.with_name(out.stem + ".partial.npz")
    np.savez(tmp, crops=np.array(crops, np.uint8).reshape(-1, size, size, 3), w=np.array(ws, np.float32).reshape(-1, 512))
    tmp.replace(out)
    return out


def _shards(folder: Path) -> list[Path]:
    """Complete shards only (one being written has another name)."""
    return sorted(p for p in folder.glob("shard_*.npz") if re.fullmatch(r"shard_\d+\.npz", p.name))


@dataclass
class EncoderTrainConfig:
    steps: int = 30000
    batch: int = 32
    lr: float = 3e-4
    eval_pairs: int = 200  # held out (the first shard's first faces)
    checkpoint_seconds: float = 300.0
    reload_every: int = 500  # steps between looks for new shards (pairs made while training)
    jitter: float = 0.03  # random shift/scale of the crops (share of the size): alignment noise on real faces
    degrade: float = 0.0  # share of crops made to look like real footage: downscaled (to 35-100%), blurred,
    #                       JPEG-compressed (quality 40-95); generated faces are sharper than real photos


class EncoderTrainer:
    def __init__(self, pairs: str | Path, out: str | Path, cfg: EncoderTrainConfig | None = None,
                 model_cfg: EncoderConfig | None = None, progress: bool = True):
        self.pairs, self.out = Path(pairs), Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.cfg, self.progress = cfg or EncoderTrainConfig(), progress
        self.detector = Detector(0.5, max_side=PAIR_SIZE)
        ckpt = self.out / "checkpoint.pt"
        state = torch.load(ckpt, weights_only=False) if ckpt.exists() else None
        self.model_cfg = (EncoderConfig(**{"head_channels": 0, **state["model_cfg"]}) if state  # (first runs: none)
                          else (model_cfg or EncoderConfig()))
        self._load_data()
        if not len(self.train_w):
            raise ValueError(f"no usable pairs in {self.pairs} (make them with `difp-stream encoder pairs`)")
        self.model = StyleEncoder(self.model_cfg, torch.from_numpy(self.all_w.mean(0)),
                                  torch.from_numpy(self.all_w.std(0) + 1e-3))
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=self.cfg.lr, weight_decay=1e-4)
        self.step = 0
        if state:
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["opt"])
            self.step = state["step"]
        self.rng = np.random.default_rng(self.step)

    def _load_data(self) -> None:
        shards = _shards(self.pairs)
        parts = [np.load(align_shard(s, self.model_cfg.size, self.detector)) for s in shards]
        crops = np.concatenate([p["crops"] for p in parts]) if parts else np.zeros((0, 1, 1, 3), np.uint8)
        ws = np.concatenate([p["w"] for p in parts]) if parts else np.zeros((0, 512), np.float32)
        k = min(self.cfg.eval_pairs, len(ws) // 5)
        self.eval_crops, self.eval_w = crops[:k], ws[:k]
        self.train_crops, self.train_w = crops[k:], ws[k:]
        self.all_w = ws
        self.shards = len(shards)

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.rng.integers(0, len(self.train_w), self.cfg.batch)
        s, j = self.model_cfg.size, self.cfg.jitter
        crops = []
        for i in idx:
            c = self.train_crops[i]
            if j:
                a = self.rng.uniform(-3, 3)
                sc = 1 + self.rng.uniform(-j, j)
                m = cv2.getRotationMatrix2D((s / 2, s / 2), a, sc)
                m[:, 2] += self.rng.uniform(-j, j, 2) * s
                c = cv2.warpAffine(c, m, (s, s), borderMode=cv2.BORDER_REFLECT101)
            if self.rng.random() < self.cfg.degrade:
                c = self._degrade(c)
            crops.append(c)
        x = to_tensor(np.stack(crops))
        if j:  # light and contrast vary in real footage
            x = (x * torch.from_numpy(self.rng.uniform(0.85, 1.15, (len(idx), 1, 1, 1))).float()
                 + torch.from_numpy(self.rng.uniform(-0.1, 0.1, (len(idx), 1, 1, 1))).float()).clamp(-1, 1)
        return x, torch.from_numpy(self.train_w[idx])

    def _degrade(self, c: np.ndarray) -> np.ndarray:
        s = c.shape[0]
        small = max(16, int(s * self.rng.uniform(0.35, 1.0)))
        c = cv2.resize(cv2.resize(c, (small, small), interpolation=cv2.INTER_AREA), (s, s),
                       interpolation=cv2.INTER_LINEAR)
        if self.rng.random() < 0.3:
            c = cv2.GaussianBlur(c, (0, 0), self.rng.uniform(0.3, 1.2))
        ok, buf = cv2.imencode(".jpg", c, [cv2.IMWRITE_JPEG_QUALITY, int(self.rng.integers(40, 96))])
        return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if ok else c

    def loss(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        pred = self.model(x)
        return (((pred - w[:, None]) / self.model.w_std) ** 2).mean()

    @torch.no_grad()
    def evaluate(self) -> float:
        self.model.eval()
        if not len(self.eval_w):
            return float("nan")
        losses = [float(self.loss(to_tensor(self.eval_crops[i:i + 64]), torch.from_numpy(self.eval_w[i:i + 64])))
                  for i in range(0, len(self.eval_w), 64)]
        self.model.train()
        return float(np.mean(losses))

    def save(self) -> None:
        tmp = self.out / "checkpoint.partial.pt"
        torch.save({"model": self.model.state_dict(), "opt": self.opt.state_dict(), "step": self.step,
                    "model_cfg": asdict(self.model_cfg)}, tmp)
        tmp.replace(self.out / "checkpoint.pt")
        self.model.save(self.out / "model")

    def run(self) -> None:
        self.model.train()
        last = time.monotonic()
        hist = open(self.out / "history.jsonl", "a")
        bar = tqdm(total=self.cfg.steps, initial=self.step, desc="encoder", disable=not self.progress)
        sched = lambda s: self.cfg.lr * min(1.0, (s + 1) / 200) * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * s / self.cfg.steps)))  # noqa: E731
        while self.step < self.cfg.steps:
            if self.step and self.step % self.cfg.reload_every == 0 and len(_shards(self.pairs)) > self.shards:
                self._load_data()
            for g in self.opt.param_groups:
                g["lr"] = sched(self.step)
            x, w = self._batch()
            loss = self.loss(x, w)
            clipped_step(self.opt, self.model.parameters(), loss)
            self.step += 1
            bar.update(1)
            if self.step % 100 == 0 or self.step == self.cfg.steps:
                rec = {"step": self.step, "loss": float(loss.detach()), "pairs": len(self.train_w)}
                if self.step % 500 == 0 or self.step == self.cfg.steps:
                    rec["eval"] = self.evaluate()
                hist.write(json.dumps(rec) + "\n")
                hist.flush()
                bar.set_postfix(loss=f"{float(loss):.3f}")
            if time.monotonic() - last > self.cfg.checkpoint_seconds or self.step == self.cfg.steps:
                self.save()
                last = time.monotonic()
        bar.close()
        hist.close()
