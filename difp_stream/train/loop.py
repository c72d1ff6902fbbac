"""Two-stage DIFP training: the VAE, then the U-Net with full conditions (Eq. 9), then with conditions dropped to
the null tokens (Eq. 11), then a decoder fine-tune with the encoder frozen (the latent space the U-Net learned stays
the same; only reconstructions, and so recovery, get sharper). Resumable: one checkpoint file holds the phase, the
step, the weights and the optimizer."""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..difp.config import ModelConfig
from ..difp.models import DIFPModel
from ..difp.schedule import make_scheduler
from .config import TrainConfig, _overrides, _to_x, fit_identity_stats, psnr
from .data import FaceSet

PHASES = ("vae", "unet1", "unet2", "decoder", "done")
CHECKPOINT = "checkpoint.pt"




def clipped_step(opt, params, loss: torch.Tensor) -> None:
    """One optimizer step with the gradients clipped to norm 1 (every trainer of the project steps this way)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()

class Trainer:
    def __init__(self, data: FaceSet, out_dir: str | Path, model_cfg: ModelConfig | None = None,
                 train_cfg: TrainConfig | None = None, device: str = "cpu", eval_data: FaceSet | None = None,
                 init_model: str | Path | None = None, log: Callable[[str], None] = print, progress: bool = True,
                 from_phase: str | None = None):
        if data.descriptors is None:
            raise ValueError("training needs identity descriptors (dlib_descriptors.npy beside manifest.tsv)")
        self.data, self.eval_data = data, eval_data
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.device = torch.device(device)
        self.log, self.progress = log, progress
        ckpt_path = self.out / CHECKPOINT
        if ckpt_path.is_file():  # resume
            ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
            self.mcfg = ModelConfig.from_dict(ck["model_cfg"])
            self.tcfg = TrainConfig.from_dict({**ck["train_cfg"], **({} if train_cfg is None else _overrides(train_cfg))})
            self.model = DIFPModel(self.mcfg)
            self.model.load_state_dict(ck["model"])
            self.phase, self.step = ck["phase"], ck["step"]
            self._opt_state = ck.get("opt")
            self._anchor = ck.get("anchor_encoder")
            log(f"resumed {ckpt_path}: phase {self.phase}, step {self.step}")
        else:
            self.tcfg = train_cfg or TrainConfig()
            if init_model:
                self.model = DIFPModel.load(init_model)
                self.mcfg = self.model.cfg
            else:
                self.mcfg = model_cfg or ModelConfig()
                self.model = DIFPModel(self.mcfg)
                fit_identity_stats(self.model, data.descriptors)
            self.phase, self.step, self._opt_state = "vae", 0, None
            self._anchor = None
        if from_phase is not None:  # e.g. more VAE training for a finished run, then the U-Net stages again
            if from_phase not in PHASES[:-1]:
                raise ValueError(f"from_phase must be one of {PHASES[:-1]}")
            self.phase, self.step, self._opt_state, self._anchor = from_phase, 0, None, None
            log(f"restarting at phase {from_phase}")
        if data.images.shape[1] != self.mcfg.resolution:
            raise ValueError(f"data resolution {data.images.shape[1]} != model resolution {self.mcfg.resolution}")
        self.model.to(self.device)
        self.sched = make_scheduler(self.mcfg)
        self.rng = np.random.default_rng(self.tcfg.seed + self.step + 7919 * PHASES.index(self.phase))
        self.history: list[dict] = []
        self._eval_ref = None  # the anchor encoder's latents of the eval crops (eval_drift)
        # photos of the same person, for identity codes taken from another photo
        by_id: dict[int, list[int]] = {}
        for i, k in enumerate(data.identities):
            by_id.setdefault(int(k), []).append(i)
        self.same_person = [by_id[int(k)] for k in data.identities]

    # ---------------------------------------------------------------- persistence
    def save(self, opt: torch.optim.Optimizer | None) -> None:
        ck = {"phase": self.phase, "step": self.step, "model": self.model.state_dict(),
              "opt": opt.state_dict() if opt is not None else None,
              "model_cfg": json.loads(self.mcfg.to_json()), "train_cfg": asdict(self.tcfg),
              "anchor_encoder": self._anchor}
        tmp = self.out / (CHECKPOINT + ".tmp")
        torch.save(ck, tmp)
        tmp.replace(self.out / CHECKPOINT)
        self.model.save(self.out / "model")  # fp16 inference copy, loadable with --model
        with (self.out / "history.jsonl").open("a") as f:
            for h in self.history:
                f.write(json.dumps(h) + "\n")
        self.history.clear()

    # ---------------------------------------------------------------- phases
    def run(self) -> DIFPModel:
        while self.phase != "done":
            if self.phase == "vae":
                self._train_vae()
                self._next_phase("unet1")
            elif self.phase in ("unet1", "unet2"):
                self._train_unet(stage=1 if self.phase == "unet1" else 2)
                self._next_phase("unet2" if self.phase == "unet1" else "decoder")
            elif self.phase == "decoder":
                self._train_decoder()
                self._next_phase("done")
        self.model.trained.fill_(1)
        self.save(None)
        return self.model

    def _next_phase(self, phase: str) -> None:
        self.phase, self.step, self._opt_state = phase, 0, None
        self.save(None)

    def _optimizer(self, params, lr):
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=self.tcfg.weight_decay)
        if self._opt_state is not None:
            try:
                opt.load_state_dict(self._opt_state)
            except ValueError:
                self.log("optimizer state does not match; starting a fresh optimizer")
            self._opt_state = None
        return opt

    def _lr(self, base: float, total: int) -> float:
        warm = min(200, total // 10 + 1)
        if self.step < warm:
            return base * (self.step + 1) / warm
        return base * 0.5 * (1 + math.cos(math.pi * min(1.0, (self.step - warm) / max(1, total - warm))))

    def _update(self, opt, params, loss: torch.Tensor, bar, **postfix) -> None:
        """One optimizer step (gradients clipped to norm 1) and the progress bar."""
        clipped_step(opt, params, loss)
        self.step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}", **postfix)

    def _fit_time(self, field: str, total: int, t0: float, s0: int, bar) -> int:
        """``phase_minutes``: 20 steps into a phase, cut its step count (``field`` of the config) to fit the time."""
        minutes = self.tcfg.phase_minutes
        if minutes <= 0 or self.step - s0 != 20:
            return total
        spent = time.time() - t0
        fit = self.step + int((minutes * 60 - spent) / (spent / 20))
        if fit < total:
            total = max(self.step + 1, fit)
            setattr(self.tcfg, field, total)
            bar.total = total
            self.log(f"{field} cut to {total} to end within {minutes:g} min ({spent / 20 * 1000:.0f} ms/step)")
        return total

    def _checkpoint(self, opt, phase: str, loss: torch.Tensor, last: float, total: int, evaluate: bool) -> float:
        """Every checkpoint_seconds and at the phase's end: a history line (with the VAE's eval PSNR) and a save."""
        if time.time() - last <= self.tcfg.checkpoint_seconds and self.step != total:
            return last
        self.history.append({"phase": phase, "step": self.step, "loss": loss.item(),
                             **(self.eval_vae() if evaluate else {})})
        self.log(json.dumps(self.history[-1]))
        self.save(opt)
        return time.time()

    def _batch_idx(self, b: int) -> np.ndarray:
        return self.rng.integers(0, len(self.data.images), b)

    def _flip(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.from_numpy(self.rng.random(x.shape[0]) < 0.5).to(x.device)
        return torch.where(mask[:, None, None, None], x.flip(-1), x)

    def _train_vae(self) -> None:
        total, vae = self.tcfg.vae_steps, self.model.vae
        vae.train()
        opt = self._optimizer(vae.parameters(), self.tcfg.lr_vae)
        last = time.time()
        bar = tqdm(total=total, initial=self.step, desc="VAE", disable=not self.progress, dynamic_ncols=True)
        t0, s0 = time.time(), self.step
        while self.step < total:
            total = self._fit_time("vae_steps", total, t0, s0, bar)
            for g in opt.param_groups:
                g["lr"] = self._lr(self.tcfg.lr_vae, total)
            x = self._flip(_to_x(self.data.images[self._batch_idx(self.tcfg.batch_vae)], self.device))
            post = vae.encode(x).latent_dist
            y = vae.decode(post.sample()).sample
            rec = F.l1_loss(y, x) + F.mse_loss(y, x)
            kl = post.kl().mean() / x[0].numel()
            loss = rec + self.tcfg.kl_weight * kl
            self._update(opt, vae.parameters(), loss, bar, psnr=f"{psnr(y.detach(), x):.1f}")
            last = self._checkpoint(opt, "vae", loss, last, total, evaluate=True)
        bar.close()
        vae.eval()
        self._set_latent_scale()

    def _train_decoder(self) -> None:
        """Fine-tune the VAE decoder on the frozen encoder's latents (posterior means, cached once); with
        ``encoder_anchor`` > 0 the encoder is tuned too, pulled towards those cached latents."""
        total, vae = self.tcfg.decoder_steps, self.model.vae
        if total <= 0:
            return
        anchor = self.tcfg.encoder_anchor
        vae.eval()
        vae.requires_grad_(False)
        dec = [vae.decoder, vae.post_quant_conv] + ([vae.encoder, vae.quant_conv] if anchor > 0 else [])
        params = [p for mod in dec for p in mod.parameters()]
        for p in params:
            p.requires_grad_(True)
        opt = self._optimizer(params, self.tcfg.lr_decoder)
        enc = vae
        if anchor > 0:  # the anchor is the encoder as the phase found it (kept in the checkpoint across resumes)
            if self._anchor is None:
                self._anchor = {k: v.detach().clone() for k, v in vae.state_dict().items()
                                if k.startswith(("encoder.", "quant_conv."))}
            enc = self._anchor_vae()
        lat = self._latents(raw=True, vae=enc)
        lat_flip = self._latents(raw=True, flip=True, vae=enc)
        for mod in dec:
            mod.train()
        last = time.time()
        bar = tqdm(total=total, initial=self.step, desc="decoder", disable=not self.progress, dynamic_ncols=True)
        b = self.tcfg.batch_vae
        t0, s0 = time.time(), self.step
        while self.step < total:
            total = self._fit_time("decoder_steps", total, t0, s0, bar)
            for g in opt.param_groups:
                g["lr"] = self._lr(self.tcfg.lr_decoder, total)
            idx = self._batch_idx(b)
            flip = torch.from_numpy(self.rng.random(b) < 0.5).to(self.device)
            z = torch.where(flip[:, None, None, None], lat_flip[idx].to(self.device), lat[idx].to(self.device))
            x = _to_x(self.data.images[idx], self.device)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            drift = None
            if anchor > 0:  # the tuned encoder's latents, held near the old ones (z: its cached latents)
                z_new = vae.encode(x).latent_dist.mean
                drift = F.mse_loss(z_new * self.mcfg.latent_scale, z * self.mcfg.latent_scale)
                z = z_new
            y = vae.decode(z).sample
            loss = F.l1_loss(y, x) + F.mse_loss(y, x)
            if drift is not None:
                loss = loss + anchor * drift
            self._update(opt, params, loss, bar, psnr=f"{psnr(y.detach(), x):.1f}",
                         **({} if drift is None else {"drift": f"{drift.item() ** 0.5:.3f}"}))
            last = self._checkpoint(opt, "decoder", loss, last, total, evaluate=True)
        bar.close()
        vae.eval()

    @torch.no_grad()
    def eval_vae(self, n: int = 256) -> dict:
        data = self.eval_data or self.data
        vae = self.model.vae
        was = vae.training
        vae.eval()
        x = _to_x(data.images[:n], self.device)
        z = torch.cat([vae.encode(c).latent_dist.mean for c in x.split(64)])
        y = torch.cat([vae.decode(c).sample for c in z.split(64)]).clamp(-1, 1)
        vae.train(was)
        out = {"eval_psnr": round(psnr(y, x), 3)}
        if self._anchor is not None:  # how far the tuned encoder moved (rms, scaled latent units)
            if self._eval_ref is None:
                self._eval_ref = torch.cat([self._anchor_vae().encode(c).latent_dist.mean for c in x.split(64)])
            out["eval_drift"] = round(((z - self._eval_ref) * self.mcfg.latent_scale).pow(2).mean().sqrt().item(), 4)
        return out

    def _anchor_vae(self):
        """A frozen copy of the VAE with the anchor encoder (the encoder as the decoder phase found it)."""
        ref = copy.deepcopy(self.model.vae).requires_grad_(False).eval()
        ref.load_state_dict(self._anchor, strict=False)
        return ref

    @torch.no_grad()
    def _set_latent_scale(self) -> None:
        self.mcfg.latent_scale = 1.0
        x = _to_x(self.data.images[self.rng.integers(0, len(self.data.images), 512)], self.device)
        z = torch.cat([self.model.encode(c) for c in x.split(64)])
        self.mcfg.latent_scale = float(1.0 / z.std().item())
        self.log(f"latent scale set to {self.mcfg.latent_scale:.4f}")

    @torch.no_grad()
    def _latents(self, raw: bool = False, flip: bool = False, vae=None) -> torch.Tensor:
        """Latents of the whole training set: scaled (the U-Net's space) or ``raw`` (the decoder's input, from
        ``vae``'s encoder when given)."""
        m, out = self.model, []
        vae = vae or m.vae
        bar = tqdm(total=len(self.data.images), desc="caching latents", disable=not self.progress, dynamic_ncols=True)
        for i in range(0, len(self.data.images), 128):
            x = _to_x(self.data.images[i:i + 128], self.device)
            x = x.flip(-1) if flip else x
            z = vae.encode(x).latent_dist.mean if raw else m.encode(x)
            out.append(z.cpu())
            bar.update(len(out[-1]))
        bar.close()
        return torch.cat(out)

    def _train_unet(self, stage: int) -> None:
        total = self.tcfg.stage1_steps if stage == 1 else self.tcfg.stage2_steps
        m = self.model
        m.vae.requires_grad_(False)
        params = [p for n, p in m.named_parameters() if not n.startswith("vae.")]
        opt = self._optimizer(params, self.tcfg.lr_unet)
        lat = self._latents()
        desc = torch.from_numpy(self.data.descriptors)
        ac = self.sched.alphas_cumprod.to(self.device)
        m.unet.train(), m.id_proj.train(), m.style_enc.train()
        last = time.time()
        bar = tqdm(total=total, initial=self.step, desc=f"U-Net stage {stage}", disable=not self.progress,
                   dynamic_ncols=True)
        b = self.tcfg.batch_unet
        t0, s0 = time.time(), self.step
        while self.step < total:
            total = self._fit_time(f"stage{stage}_steps", total, t0, s0, bar)
            for g in opt.param_groups:
                g["lr"] = self._lr(self.tcfg.lr_unet, total)
            idx = self._batch_idx(b)
            flip = torch.from_numpy(self.rng.random(b) < 0.5).to(self.device)[:, None, None, None]
            z0 = lat[idx].to(self.device)
            z0 = torch.where(flip, z0.flip(-1), z0)
            x = _to_x(self.data.images[idx], self.device)
            x = torch.where(flip, x.flip(-1), x)
            other = [i if self.rng.random() < self.tcfg.same_photo_identity else int(self.rng.choice(self.same_person[i]))
                     for i in idx]
            id_tok = m.id_tokens(desc[other].to(self.device))
            sty_tok = m.style_tokens(x)
            if stage == 2:
                drop_id = torch.from_numpy(self.rng.random(b) < self.tcfg.drop).to(self.device)[:, None, None]
                drop_sty = torch.from_numpy(self.rng.random(b) < self.tcfg.drop).to(self.device)[:, None, None]
                id_tok = torch.where(drop_id, m.null_id.expand(b, -1, -1), id_tok)
                sty_tok = torch.where(drop_sty, m.null_sty.expand(b, -1, -1), sty_tok)
            t = torch.from_numpy(self.rng.integers(0, self.mcfg.train_timesteps, b)).to(self.device)
            noise = torch.randn_like(z0)
            a = ac[t][:, None, None, None]
            zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
            pred = m.unet(zt, t, encoder_hidden_states=m.context(id_tok, sty_tok, b)).sample
            loss = F.mse_loss(pred, noise)
            self._update(opt, params, loss, bar)
            last = self._checkpoint(opt, f"unet{stage}", loss, last, total, evaluate=False)
        bar.close()
        m.eval()
