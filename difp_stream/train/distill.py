"""Distil a fast model from a trained DIFP model (the teacher).

The teacher's protection makes ``steps`` inversion calls and ``steps`` guided calls of four branches (unconditional,
surrogate identity, style, and the key's recovery branch) per face. The student is a smaller U-Net that answers
either question in one call, selected by a mode token in its context:

- *conditional*: ``eps(z, t | id, sty)``, what the inversion and the recovery use;
- *guided*: the dual-guided ``eps(∅,∅) + s_id (eps(id,∅) - eps(∅,∅)) + s_sty (eps(∅,sty) - eps(∅,∅))`` at the
  teacher's scales (guidance distillation), so protection needs one branch instead of three.

Training pairs are recorded from the teacher's own protection runs on training crops (the states the sampler really
visits, at the few-step levels it uses), then the student regresses the teacher's eps. A small conv decoder
(:class:`~difp_stream.difp.models.FastDecoder`) is fitted to render the protected faces; recovery keeps the VAE's
decoder. The student shares the teacher's VAE, condition encoders and statistics, so keys are the teacher's kind.

Resumable: ``OUT/records/`` holds the recorded pairs in shards, ``OUT/distill.pt`` the phase, step, weights and
optimizer."""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..difp.config import ModelConfig
from ..difp.guidance import dual_guidance
from ..difp.models import DIFPModel
from ..difp.protector import Protector
from .data import FaceSet

CHECKPOINT = "distill.pt"


@dataclass
class DistillConfig:
    unet_channels: tuple[int, ...] = (32, 64, 96)
    unet_attn_levels: tuple[bool, ...] = (False, True, True)
    decoder_channels: tuple[int, ...] = (64, 48, 32)
    crops: int = 8000  # teacher protection runs recorded (one per crop, random surrogate)
    record_batch: int = 16
    unet_steps: int = 3000
    decoder_steps: int = 2000
    batch: int = 128
    decoder_batch: int = 32
    lr: float = 1e-3
    checkpoint_seconds: float = 300.0
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> "DistillConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known})


class _Recorder:
    """Wraps the teacher's backend and keeps what one ``Protector.protect(keys=True)`` call asks of it."""

    def __init__(self, net, s_id: float, s_sty: float, id_tokens: int):
        self.net, self.s_id, self.s_sty, self.id_tokens = net, s_id, s_sty, id_tokens
        self.reset()

    def reset(self) -> None:
        self.z, self.t, self.tok, self.mode, self.target = [], [], [], [], []
        self.z0, self.z_p = None, None

    def _add(self, z, t, tok, mode, target) -> None:
        self.z.append(z.half())
        self.t.append(torch.full((len(z),), int(t), dtype=torch.int16))
        self.tok.append(tok.half())
        self.mode.append(torch.full((len(z),), mode, dtype=torch.uint8))
        self.target.append(target.half())

    def eps(self, z, t, ctx):
        e = self.net.eps(z, t, ctx)
        parts = len(z) // len(self.z0)
        if parts == 1:  # inversion: conditional eps under the original's conditions
            self._add(z, t, ctx, 0, e)
        else:  # [uncond | surrogate | style] guided batch, + [full] where the key branch rides along
            zs, cs, es = z.chunk(parts), ctx.chunk(parts), e.chunk(parts)
            tok = torch.cat([cs[1][:, : self.id_tokens], cs[2][:, self.id_tokens:]], 1)
            self._add(zs[0], t, tok, 1, dual_guidance(es[0], es[1], es[2], self.s_id, self.s_sty))
            if parts == 4:
                self._add(zs[3], t, cs[3], 0, es[3])
        return e

    def encode(self, x):  # the first call of a protect: its batch is the number of faces
        self.z0 = self.net.encode(x)
        return self.z0

    def decode_protected(self, z, size=None):
        self.z_p = z
        return self.net.decode(z, size)

    decode = decode_protected


def record_teacher(teacher: DIFPModel, data: FaceSet, out_dir: Path, n_crops: int, batch: int = 16,
                   seed: int = 0, backend=None, log: Callable[[str], None] = print) -> None:
    """Run the teacher's protection (with keys) on ``n_crops`` training crops and store, per shard of 512 crops,
    the student's training pairs and the decoder's (latent, image) pairs. Existing shards are kept (resume)."""
    if data.descriptors is None:
        raise ValueError("distillation needs identity descriptors (dlib_descriptors.npy beside the manifest)")
    rec_dir = out_dir / "records"
    rec_dir.mkdir(parents=True, exist_ok=True)
    s = teacher.cfg.sampling_config()
    rec = _Recorder(backend or teacher, s.s_id, s.s_sty, teacher.cfg.id_tokens)
    p = Protector(teacher, s, device="cpu", backend=rec)
    order = np.random.default_rng(seed).permutation(len(data.images))[:n_crops]
    shard = 512
    bar = tqdm(total=len(order), desc="teacher runs", unit="crop")
    for k in range(0, len(order), shard):
        path = rec_dir / f"shard_{k // shard:04d}.pt"
        idx = order[k:k + shard]
        if path.is_file():
            bar.update(len(idx))
            continue
        parts: dict[str, list] = {n: [] for n in ("z", "t", "tok", "mode", "target", "dec_z", "dec_x")}
        for j in range(0, len(idx), batch):
            b = idx[j:j + batch]
            crops = data.images[b]
            flip = (np.arange(len(b)) + j) % 2 == 1  # half of them mirrored: more poses for the same budget
            crops = np.where(flip[:, None, None, None], crops[:, :, ::-1], crops)
            rec.reset()
            r = p.protect(np.ascontiguousarray(crops), seeds=[int(seed * 1_000_000 + i) for i in b],
                          id_codes=data.descriptors[b], keys=True)
            for name in ("z", "t", "tok", "mode", "target"):
                parts[name].append(torch.cat(getattr(rec, name)))
            # decoder pairs: original latents -> original crops, protected latents -> the teacher's rendering
            parts["dec_z"] += [rec.z0.half(), rec.z_p.half()]
            parts["dec_x"] += [torch.from_numpy(crops.copy()), torch.from_numpy(r.crops)]
            bar.update(len(b))
        torch.save({n: torch.cat(v) for n, v in parts.items()}, path)
    bar.close()
    log(f"recorded teacher runs in {rec_dir}")


def load_records(out_dir: Path) -> dict[str, torch.Tensor]:
    shards = sorted((out_dir / "records").glob("shard_*.pt"))
    if not shards:
        raise FileNotFoundError(f"no recorded teacher runs in {out_dir / 'records'}")
    loaded = [torch.load(p) for p in shards]
    return {k: torch.cat([d[k] for d in loaded]) for k in loaded[0]}


def student_config(teacher: ModelConfig, dcfg: DistillConfig) -> ModelConfig:
    s = teacher.sampling_config()
    cfg = copy.deepcopy(teacher)
    cfg.unet_channels = tuple(dcfg.unet_channels)
    cfg.unet_attn_levels = tuple(dcfg.unet_attn_levels)
    cfg.distilled = {"steps": s.steps, "strength": s.strength, "s_id": s.s_id, "s_sty": s.s_sty}
    cfg.fast_decoder_channels = tuple(dcfg.decoder_channels)
    return cfg


def make_student(teacher: DIFPModel, dcfg: DistillConfig) -> DIFPModel:
    """A student with the teacher's VAE, condition encoders, null tokens and statistics; a new U-Net, mode tokens
    and fast decoder."""
    torch.manual_seed(dcfg.seed)
    student = DIFPModel(student_config(teacher.cfg, dcfg))
    own = student.state_dict()
    shared = {k: v for k, v in teacher.state_dict().items() if not k.startswith("unet.") and k in own}
    student.load_state_dict(shared, strict=False)
    return student


class Distiller:
    def __init__(self, teacher: DIFPModel, data: FaceSet, out_dir: str | Path, dcfg: DistillConfig | None = None,
                 backend=None, log: Callable[[str], None] = print):
        self.teacher, self.data, self.out = teacher.eval(), data, Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.log, self.backend = log, backend
        ck = self.out / CHECKPOINT
        self.state = torch.load(ck, weights_only=False) if ck.is_file() else None
        if self.state is not None:
            self.dcfg = DistillConfig.from_dict(self.state["dcfg"])
            log(f"resuming distillation at {self.state['phase']} step {self.state['step']}")
        else:
            self.dcfg = dcfg or DistillConfig()
        self.student = make_student(teacher, self.dcfg)
        if self.state is not None:
            self.student.load_state_dict(self.state["model"])

    def _save(self, phase: str, step: int, opt) -> None:
        tmp = self.out / (CHECKPOINT + ".tmp")
        torch.save({"phase": phase, "step": step, "model": self.student.state_dict(),
                    "opt": opt.state_dict() if opt is not None else None, "dcfg": asdict(self.dcfg)}, tmp)
        tmp.replace(self.out / CHECKPOINT)

    def run(self) -> DIFPModel:
        d = self.dcfg
        record_teacher(self.teacher, self.data, self.out, d.crops, d.record_batch, d.seed, self.backend, self.log)
        recs = load_records(self.out)
        phase = self.state["phase"] if self.state else "unet"
        if phase == "unet":
            self._fit("unet", recs)
            phase = "decoder"
        if phase == "decoder":
            self._fit("decoder", recs)
        self.student.trained.fill_(1)
        self._save("done", 0, None)
        self.student.eval().save(self.out / "model")
        (self.out / "distill.json").write_text(json.dumps(asdict(d), indent=2))
        self.log(f"fast model written to {self.out / 'model'}")
        return self.student

    def _fit(self, phase: str, recs: dict[str, torch.Tensor]) -> None:
        d, m = self.dcfg, self.student
        m.train()
        if phase == "unet":
            params = list(m.unet.parameters()) + [m.mode_tokens]
            total, n = d.unet_steps, len(recs["z"])
        else:
            params = list(m.fast_dec.parameters())
            total, n = d.decoder_steps, len(recs["dec_z"])
        opt = torch.optim.AdamW(params, lr=d.lr, weight_decay=1e-4)
        step = 0
        if self.state is not None and self.state["phase"] == phase:
            step = self.state["step"]
            if self.state["opt"] is not None:
                opt.load_state_dict(self.state["opt"])
        gen = torch.Generator().manual_seed(d.seed + step)
        last = time.time()
        bar = tqdm(total=total, initial=step, desc=f"distil {phase}", unit="step")
        while step < total:
            lr = d.lr * 0.5 * (1 + math.cos(math.pi * step / total))
            for g in opt.param_groups:
                g["lr"] = lr
            idx = torch.randint(0, n, (d.batch if phase == "unet" else d.decoder_batch,), generator=gen)
            if phase == "unet":
                z, t = recs["z"][idx].float(), recs["t"][idx].long()
                mode = recs["mode"][idx].long()
                ctx = torch.cat([recs["tok"][idx].float(), m.mode_tokens[mode]], 1)
                loss = F.mse_loss(m.unet(z, t, encoder_hidden_states=ctx).sample, recs["target"][idx].float())
            else:
                z = recs["dec_z"][idx].float()
                x = recs["dec_x"][idx].permute(0, 3, 1, 2).float() / 127.5 - 1
                y = m.fast_dec(z / m.cfg.latent_scale)
                loss = F.l1_loss(y, x) + F.mse_loss(y, x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if time.time() - last > d.checkpoint_seconds:
                self._save(phase, step, opt)
                last = time.time()
        bar.close()
        self.state = None
        self._save("decoder" if phase == "unet" else "done", 0, None)
        m.eval()

