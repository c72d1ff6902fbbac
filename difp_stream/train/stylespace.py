"""Training DIFP in the generator's style space (``difp/stylespace.py``).

1. ``build_latents``: each training crop (the shared set's 128 px template crops) is cut out again in the generator's
   FFHQ framing from its five landmarks, encoded into W+ by the style encoder, and kept with its identity code and
   a 16 px thumbnail (the style condition's input): ``latents.npz``. Resumes by chunk.
2. ``StyleDIFPTrainer``: the paper's two stages on those latents: stage 1 with full conditions, stage 2 with the
   identity and style conditions each dropped at random (classifier-free guidance needs both). eps-prediction MSE
   on the DDPM schedule. Resumable (``checkpoint.pt``); the model folder (``model/``) is written with it.

    difp-stream train-styles latents SHARED/data/faces RUN
    difp-stream train-styles fit RUN --minutes 60
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from ..difp.schedule import make_scheduler
from ..difp.stylespace import StyleDIFP, StyleModelConfig
from ..gan.encoder import ffhq_crop, ffhq_transform, load_encoder, to_tensor
from .data import read_manifest
from .loop import clipped_step
from ..difp.identity import DlibIdentityEncoder
from ..gan.mobilestylegan import load_generator, to_uint8
from ..runtime.generator import renderer

THUMB = 16


def render_codes(w_plus: torch.Tensor, lms: np.ndarray, backend: str = "auto") -> np.ndarray:
    """dlib codes [N, 128] of what W+ renders, seen as the pipeline sees a face: rendered at 128 px (FFHQ framing),
    put back into the 128 px template frame of the crop it came from (``lms``: its five points there), described
    with the pipeline's face box. The identity a latent really carries (the encoder's reconstruction of a photo is
    not yet that photo's person)."""
    if backend == "auto":
        try:
            import openvino  # noqa: F401

            backend = "openvino"
        except ImportError:
            backend = "torch"
    render, ids = renderer(load_generator(), 128, backend), DlibIdentityEncoder()
    out = np.empty((len(w_plus), 128), np.float32)
    for i in range(len(w_plus)):
        img = to_uint8(torch.from_numpy(render(w_plus[i:i + 1].float().numpy())))[0]
        m = ffhq_transform(lms[i], 128)
        seen = cv2.warpAffine(img, m, (128, 128), flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        out[i] = ids(seen[None])[0]
    return out


def build_latents(faces: str | Path, out: str | Path, split: str = "train", limit: int | None = None,
                  encoder=None, chunk: int = 512, progress: bool = True, labels: str = "photo") -> Path:
    """Encode the ``split`` crops of a faces folder (manifest with ``landmarks``; descriptors in
    ``dlib_descriptors.npy``) into ``OUT/latents.npz``: w_plus fp16 [N, 23, 512], ids [N, 128], thumbs uint8
    [N, 16, 16, 3], identity names. ``labels``: the identity code of each latent, the photo's own (``photo``:
    the folder's descriptors) or that of the latent's render (``render``: ``render_codes``, ~0.2 s a face)."""
    faces, out = Path(faces), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    final = out / "latents.npz"
    if labels not in ("photo", "render"):
        raise ValueError(f"labels must be 'photo' or 'render', not {labels!r}")
    if final.exists():
        return final
    rows = read_manifest(faces)
    desc = np.load(faces / "dlib_descriptors.npy").astype(np.float32)
    idx = [i for i, r in enumerate(rows) if r.get("split", "train") == split][:limit]
    enc = encoder or load_encoder()
    parts = out / "parts"
    parts.mkdir(exist_ok=True)
    bar = tqdm(total=len(idx), desc="latents", unit="face", disable=not progress)
    for c in range(0, len(idx), chunk):
        path = parts / f"{c // chunk:04d}.npz"
        sel = idx[c:c + chunk]
        if not path.exists():
            crops, lms = [], []
            for i in sel:
                img = cv2.imread(str(faces / rows[i]["file"]))[:, :, ::-1]
                lms.append(np.array(rows[i]["landmarks"].split(), np.float32).reshape(5, 2))
                crops.append(ffhq_crop(img, lms[-1], enc.cfg.size))
            crops = np.stack(crops)
            with torch.no_grad():
                w = torch.cat([enc(to_tensor(crops[j:j + 64])) for j in range(0, len(crops), 64)])
            thumbs = np.stack([cv2.resize(c_, (THUMB, THUMB), interpolation=cv2.INTER_AREA) for c_ in crops])
            codes = render_codes(w, np.stack(lms)) if labels == "render" else desc[sel]
            tmp = path.with_name(path.stem + ".partial.npz")
            np.savez(tmp, w_plus=w.half().numpy(), thumbs=thumbs, ids=codes)
            tmp.replace(path)
        bar.update(len(sel))
    bar.close()
    got = [np.load(parts / f"{k:04d}.npz") for k in range(-(-len(idx) // chunk))]
    tmp = out / "latents.partial.npz"
    np.savez(tmp, w_plus=np.concatenate([g["w_plus"] for g in got]), thumbs=np.concatenate([g["thumbs"] for g in got]),
             ids=np.concatenate([g["ids"] for g in got]), identity=np.array([rows[i]["identity"] for i in idx]))
    tmp.replace(final)
    return final


@dataclass
class StyleTrainConfig:
    stage1_steps: int = 3000
    stage2_steps: int = 6000
    batch: int = 128
    lr: float = 3e-4
    drop_id: float = 0.15  # stage 2: share of samples trained without the identity condition
    drop_style: float = 0.15  # ... without the style condition (both dropped: their product)
    checkpoint_seconds: float = 180
    eval_every: int = 250
    eval_count: int = 512


class StyleDIFPTrainer:
    def __init__(self, run: str | Path, cfg: StyleTrainConfig | None = None, mcfg: StyleModelConfig | None = None,
                 seed: int = 0, progress: bool = True):
        self.run, self.cfg, self.progress = Path(run), cfg or StyleTrainConfig(), progress
        data = np.load(self.run / "latents.npz")
        w = torch.from_numpy(data["w_plus"].astype(np.float32))
        ids = torch.from_numpy(data["ids"].astype(np.float32))
        thumbs = torch.from_numpy(data["thumbs"]).permute(0, 3, 1, 2).float() / 127.5 - 1
        names = data["identity"]
        g = torch.Generator().manual_seed(seed)
        # hold out whole identities for the validation loss
        uniq = np.unique(names)
        held = set(uniq[torch.randperm(len(uniq), generator=g)[: max(1, len(uniq) // 50)].numpy()])
        val = torch.from_numpy(np.array([n in held for n in names]))
        self.train = (w[~val], ids[~val], thumbs[~val])
        self.val = tuple(t[val][: self.cfg.eval_count] for t in (w, ids, thumbs))
        self.model = StyleDIFP(mcfg or StyleModelConfig())
        m = self.model
        m.w_mean.copy_(self.train[0].mean(0))
        m.w_std.copy_(self.train[0].std(0).clamp_min(1e-3 * float(self.train[0].std())))
        m.id_mean.copy_(ids.mean(0))
        m.id_std.copy_(ids.std(0).clamp_min(1e-4))
        cov = torch.cov(ids.T.double()) + 1e-6 * torch.eye(ids.shape[1], dtype=torch.float64)
        m.id_chol.copy_(torch.linalg.cholesky(cov).float())
        self.abar = make_scheduler(m.cfg).alphas_cumprod.float()
        self.opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=self.cfg.lr, weight_decay=0.01)
        self.step, self.history, self.rng = 0, [], torch.Generator().manual_seed(seed + 1)
        ck = self.run / "checkpoint.pt"
        if ck.exists():
            st = torch.load(ck, weights_only=False)
            m.load_state_dict(st["model"])
            self.opt.load_state_dict(st["opt"])
            self.step, self.history = st["step"], st["history"]
            self.rng.manual_seed(seed + 1 + self.step)
        else:  # (a resumed run has its basis in the checkpoint)
            self._fit_basis()

    def _fit_basis(self) -> None:
        """The principal subspace of the (normalised) training latents, for the noise predictor."""
        m = self.model
        flat = m.to_latent(self.train[0]).flatten(1)
        k = min(m.cfg.basis_rank, *flat.shape)
        torch.manual_seed(0)
        _, s, v = torch.pca_lowrank(flat, q=k, center=False, niter=4)
        d = m.denoiser
        d.basis.zero_()
        d.basis[:k] = v.T
        d.scale.fill_(1.0)
        d.scale[:k] = (s / len(flat) ** 0.5).clamp_min(1e-3)
        d.rest_var.fill_(float((flat - flat @ v @ v.T).pow(2).mean()))

    @property
    def total_steps(self) -> int:
        return self.cfg.stage1_steps + self.cfg.stage2_steps

    def loss(self, w: torch.Tensor, ids: torch.Tensor, thumbs: torch.Tensor, drop: bool,
             gen: torch.Generator | None = None, subspace: bool = False) -> torch.Tensor:
        """eps MSE at random levels; ``subspace``: only its part in the learned subspace (the rest is exact)."""
        m, n = self.model, len(w)
        gen = gen or self.rng
        z0 = m.to_latent(w)
        t = torch.randint(1, len(self.abar), (n,), generator=gen)
        noise = torch.randn(z0.shape, generator=gen)
        a = self.abar[t][:, None, None]
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        id_tok, sty_tok = m.id_tokens(ids), m.style_tokens(thumbs)
        if drop:
            keep_id = (torch.rand(n, generator=gen) >= self.cfg.drop_id)[:, None, None]
            keep_sty = (torch.rand(n, generator=gen) >= self.cfg.drop_style)[:, None, None]
            id_tok = torch.where(keep_id, id_tok, m.null_id.expand(n, -1, -1))
            sty_tok = torch.where(keep_sty, sty_tok, m.null_sty.expand(n, -1, -1))
        ctx = m.context(id_tok, sty_tok, n)
        err = m.eps(zt, t, ctx) - noise
        if subspace:
            return (err.flatten(1) @ m.denoiser.basis.T).pow(2).mean()
        return err.pow(2).mean()

    @torch.no_grad()
    def evaluate(self) -> float:
        self.model.eval()
        out = float(self.loss(*self.val, drop=False, gen=torch.Generator().manual_seed(123), subspace=True))
        self.model.train()
        return out

    def save(self) -> None:
        self.model.trained.fill_(1)
        self.model.save(self.run / "model")
        st = {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "step": self.step,
              "history": self.history, "config": asdict(self.cfg)}
        torch.save(st, self.run / "checkpoint.partial.pt")
        (self.run / "checkpoint.partial.pt").replace(self.run / "checkpoint.pt")

    def fit(self, minutes: float | None = None, log=print) -> float:
        end = time.time() + minutes * 60 if minutes else float("inf")
        last = time.time()
        w, ids, thumbs = self.train
        self.model.train()
        bar = tqdm(total=self.total_steps, initial=self.step, desc="style DIFP", disable=not self.progress)
        while self.step < self.total_steps and time.time() < end:
            pick = torch.randint(0, len(w), (self.cfg.batch,), generator=self.rng)
            loss = self.loss(w[pick], ids[pick], thumbs[pick], drop=self.step >= self.cfg.stage1_steps)
            clipped_step(self.opt, self.model.parameters(), loss)
            self.step += 1
            bar.update(1)
            if self.step % self.cfg.eval_every == 0:
                ev = self.evaluate()
                self.history.append({"step": self.step, "train": float(loss.detach()), "val": ev})
                log(f"step {self.step} train {float(loss.detach()):.4f} val {ev:.4f}")
            if time.time() - last > self.cfg.checkpoint_seconds:
                self.save()
                last = time.time()
        bar.close()
        self.save()
        return self.evaluate()
