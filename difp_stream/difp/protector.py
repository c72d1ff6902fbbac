"""``Protector``: batched DIFP protection and recovery of aligned face crops (no video or file knowledge)."""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from .config import ModelConfig, SamplingConfig
from .guidance import dual_guidance
from .models import DIFPModel
from .realism import adaptive_g, global_ssim
from .schedule import FewStepDDIM, make_scheduler
from .surrogate import sample_surrogates


@dataclass
class FaceKey:
    """What recovers one protected face (the paper's key ``(F_i, F_e)`` plus a latent correction).

    ``z_ts``: the DDIM-inverted latent at ``t_s``; ``id_code`` / ``style``: the original's conditions;
    ``correction``: ``z0 - recovered(z_ts)``, so recovery is as faithful as the VAE; ``steps`` / ``strength``:
    the schedule the key was made with. With a key resolution above the model's, ``correction`` is larger than
    ``z_ts``: it takes the recovered latent, upsampled, to the latent of the original encoded at that resolution
    (the VAE is convolutional: more of the face's detail comes back). ``steps == 0`` marks a key of a *carried*
    frame (video frames between two DIFP keyframes of a track): ``z_ts`` then holds the clean latent ``z0``."""

    z_ts: np.ndarray  # float16 [C, h, w]
    correction: np.ndarray  # float16 [C, h, w], or [C, k*h, k*w] at key resolution k*R
    id_code: np.ndarray  # float16 [id_dim]
    style: np.ndarray  # float16 [style_tokens, token_dim]
    steps: int
    strength: float


@dataclass
class ProtectResult:
    crops: np.ndarray  # uint8 [N, R, R, 3]
    keys: list[FaceKey] | None
    surrogates: np.ndarray | None  # float32 [N, id_dim]
    latents: torch.Tensor | None = None  # z0 of the originals
    protected_latents: torch.Tensor | None = None  # z0' of the protected faces


def to_tensor(crops: np.ndarray, resolution: int, device) -> torch.Tensor:
    """uint8 RGB ``[N, R, R, 3]`` -> float ``[N, 3, R, R]`` in [-1, 1], with clear errors on bad input."""
    if not isinstance(crops, np.ndarray):
        raise TypeError(f"crops must be a numpy array, got {type(crops).__name__}")
    if crops.dtype != np.uint8:
        raise TypeError(f"crops must be uint8 RGB, got dtype {crops.dtype}")
    if crops.ndim != 4 or crops.shape[1:] != (resolution, resolution, 3):
        raise ValueError(f"crops must have shape [N, {resolution}, {resolution}, 3], got {list(crops.shape)}")
    if crops.shape[0] == 0:
        raise ValueError("crops is an empty batch")
    t = torch.from_numpy(np.ascontiguousarray(crops)).to(device).permute(0, 3, 1, 2).float()
    return t / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _half(a: torch.Tensor) -> np.ndarray:
    return a.detach().to(torch.float16).cpu().numpy()


def _seed_list(seeds: int | Sequence[int], n: int) -> list[int]:
    if isinstance(seeds, (int, np.integer)):
        return [int(seeds) + i for i in range(n)]
    seeds = [int(s) for s in seeds]
    if len(seeds) != n:
        raise ValueError(f"need {n} seeds (one per crop), got {len(seeds)}")
    return seeds


def _noise(seeds: list[int], shape: tuple, device, salt: int) -> torch.Tensor:
    out = []
    for s in seeds:
        g = torch.Generator().manual_seed((int(s) * 1_000_003 + salt) & 0xFFFF_FFFF_FFFF)
        out.append(torch.randn(shape, generator=g))
    return torch.stack(out).to(device)


def schedules(ddim: FewStepDDIM, s: SamplingConfig) -> tuple[list[int], list[int]]:
    """The sampling levels and the key's (inversion) levels; each key level must be a sampling level, so the key
    branch rides along in the sampler's U-Net calls (ValueError otherwise)."""
    ts = ddim.timesteps(s.steps, s.strength)
    ts_key = ddim.timesteps(s.inversion_steps or s.steps, s.strength)
    if not set(ts_key) <= set(ts):
        raise ValueError(f"{s.inversion_steps} inversion steps (levels {ts_key}) do not fall on the {s.steps} "
                         f"sampling steps' levels {ts}; use a divisor of {s.steps}")
    return ts, ts_key


def _fit(z: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``z`` resized (bilinear) to the spatial size of ``like``; unchanged when they match."""
    if z.shape[-2:] == like.shape[-2:]:
        return z
    return torch.nn.functional.interpolate(z, size=like.shape[-2:], mode="bilinear", align_corners=False)


def check_sampling(cfg: ModelConfig, s: SamplingConfig) -> None:
    """Refuse (ValueError) an inversion schedule off the sampling levels, and for a distilled model, which learned
    one schedule and one pair of guidance scales, any other."""
    schedules(FewStepDDIM(make_scheduler(cfg)), s)
    d = cfg.distilled
    asked = {"steps": s.steps, "strength": s.strength, "s_id": s.s_id, "s_sty": s.s_sty}
    wrong = [f"{k} {asked[k]:g} (distilled for {d[k]:g})" for k in d if k in asked and abs(asked[k] - d[k]) > 1e-6]
    if wrong:
        raise ValueError("this fast model was distilled for fixed sampling settings; cannot use " + ", ".join(wrong))


class Protector:
    """Protect and recover aligned crops with a DIFP model.

    ``identity_encoder`` (optional): a callable uint8 crops -> float ``[N, id_dim]`` recognition embeddings, used
    when ``protect`` is not given the originals' identity codes (the video pipeline computes them once per track).
    ``backend`` (optional): runs the heavy parts (``eps``, ``encode``, ``decode``), e.g. an ONNX Runtime or
    TensorRT runner from ``difp_stream.runtime``; by default the model itself (PyTorch).
    ``key_resolution`` (optional, a multiple of the model's resolution): keys aim at the original encoded at this
    resolution (``protect``/``carry`` then take ``key_crops``, the same faces aligned at that size), and ``recover``
    returns crops of that size; the protected face does not change."""

    def __init__(self, model: DIFPModel, sampling: SamplingConfig | None = None, device: str | None = None,
                 identity_encoder: Callable[[np.ndarray], np.ndarray] | None = None, backend=None,
                 key_refine: int = 0, key_resolution: int = 0):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.net = backend or self.model
        self.sampling = sampling or model.cfg.sampling_config()  # the model's recommended values
        self.ddim = FewStepDDIM(make_scheduler(model.cfg))
        self.identity_encoder = identity_encoder
        self.resolution = model.cfg.resolution
        self.timings = None  # optional: a callable stage name -> context manager (pipeline.Timings)
        self.render_size = None  # a style-space model: the size its faces are rendered at (None: the model's)
        self.key_refine = key_refine  # > 0: keys hold a latent refined by this many decoder-gradient steps
        self.distilled = bool(model.cfg.distilled)
        check_sampling(model.cfg, self.sampling)
        self._sched = None  # (sampling, its schedules)
        self.key_resolution = key_resolution or self.resolution
        if self.key_resolution % self.resolution:
            raise ValueError(f"key resolution {key_resolution} is not a multiple of the model's {self.resolution}")

    # ------------------------------------------------------------------ helpers
    def _schedules(self) -> tuple[list[int], list[int]]:
        """The sampling and key schedules, made once per sampling config (prepared once, thin per-frame call)."""
        if self._sched is None or self._sched[0] is not self.sampling:
            self._sched = (self.sampling, schedules(self.ddim, self.sampling))
        return self._sched[1]

    def _render(self, z: torch.Tensor) -> np.ndarray:
        """The protected latents decoded (a style-space model: rendered at ``render_size``)."""
        return to_uint8(self.net.decode_protected(z, self.render_size))

    def _t(self, stage: str):
        return self.timings(stage) if self.timings is not None else nullcontext()

    def _id_codes(self, crops: np.ndarray, id_codes) -> torch.Tensor:
        if id_codes is None:
            if self.identity_encoder is None:
                raise ValueError("no id_codes given and this Protector has no identity_encoder")
            id_codes = self.identity_encoder(crops)
        t = torch.as_tensor(np.asarray(id_codes, dtype=np.float32), device=self.device)
        if t.ndim != 2 or t.shape != (crops.shape[0], self.model.cfg.id_dim):
            raise ValueError(f"id_codes must have shape [{crops.shape[0]}, {self.model.cfg.id_dim}], got {list(t.shape)}")
        return t

    def key_latents(self, z0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The clean latent a key restores: the encoder's ``z0``, or with ``key_refine`` > 0 a latent moved by that
        many Adam steps on the decoder's squared error against the original crop ``x`` (the VAE encoder is what
        limits recovery; the decoder can do ~1.4 dB better from a latent fitted to the face at 10 steps)."""
        if self.key_refine <= 0:
            return z0
        dec = self.model.decode
        z = z0.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=0.03)  # measured: 0.03 beats 0.05 and 0.1 at 10 steps
        with self._t("difp: key refine"), torch.enable_grad():
            for _ in range(self.key_refine):
                loss = (dec(z) - x).pow(2).sum()
                (z.grad,) = torch.autograd.grad(loss, z)  # the decoder's weights get no gradient
                opt.step()
        return z.detach()

    def _key_target(self, z0: torch.Tensor, x: torch.Tensor, key_crops) -> torch.Tensor:
        """The latent a key restores: ``key_latents(z0, x)``, or at a higher key resolution the same for the
        originals in ``key_crops``, encoded with the PyTorch VAE (the runtime graphs are fixed at the model's size)."""
        if self.key_resolution == self.resolution:
            return self.key_latents(z0, x)
        if key_crops is None:
            raise ValueError(f"key resolution {self.key_resolution} needs key_crops: the faces aligned at that size")
        xk = to_tensor(key_crops, self.key_resolution, self.device)
        if xk.shape[0] != x.shape[0]:
            raise ValueError(f"{xk.shape[0]} key_crops for {x.shape[0]} crops")
        with self._t("difp: key encode"):
            zk = self.model.encode(xk)
        return self.key_latents(zk, xk)

    # ------------------------------------------------------------------ API
    @torch.no_grad()
    def protect(self, crops: np.ndarray, seeds: int | Sequence[int] = 0, id_codes=None, keys: bool = True,
                surrogates=None, key_crops: np.ndarray | None = None) -> ProtectResult:
        """Replace each crop's face by a face of a surrogate identity; return the protected crops and, when
        ``keys``, one :class:`FaceKey` per crop. ``surrogates`` (optional ``[N, id_dim]``) overrides the draw
        (the video pipeline keeps one per track); ``key_crops``: the same faces at the key resolution."""
        s, m = self.sampling, self.model
        x = to_tensor(crops, self.resolution, self.device)
        n = x.shape[0]
        seeds = _seed_list(seeds, n)
        ids = self._id_codes(crops, id_codes)
        if surrogates is None:
            sur = sample_surrogates(ids, seeds, m.id_mean, m.id_chol, s.min_surrogate_distance,
                                    spread=s.surrogate_spread)
        else:
            sur = torch.as_tensor(np.asarray(surrogates, dtype=np.float32), device=self.device)
            if sur.shape != ids.shape:
                raise ValueError(f"surrogates must have shape {list(ids.shape)}, got {list(sur.shape)}")

        with self._t("difp: vae encode"):
            z0 = self.net.encode(x)
        id_tok, sty_tok, sur_tok = m.id_tokens(ids), m.style_tokens(x), m.id_tokens(sur)
        ctx_full = m.context(id_tok, sty_tok, n)
        ts, ts_key = self._schedules()
        ref_noise = _noise(seeds, tuple(z0.shape[1:]), self.device, salt=1)

        # deterministic DDIM inversion under the original's own conditions: the key's F_i, and the start of the
        # protected sample also without keys (forward noising at t_s left far worse faces with few steps)
        z = z0
        with self._t("difp: ddim inversion"):
            for t, t_up in zip(ts_key[::-1][:-1], ts_key[::-1][1:]):
                z = self.ddim.step(z, self.net.eps(z, t, ctx_full), t, t_up)
        z_ts = z

        # one U-Net call per step: [uncond | surrogate id | style] (+ [full conditions] at the key's levels, to
        # check recovery); a distilled model answers the guided question in one branch: [surrogate id + style, guided]
        if self.distilled:
            ctx_p = m.context(sur_tok, sty_tok, n, guided=True)
        else:
            ctx_p = torch.cat([m.context(None, None, n), m.context(sur_tok, None, n), m.context(None, sty_tok, n)])
        branches = ctx_p.shape[0] // n
        ctx_k = torch.cat([ctx_p, ctx_full]) if keys else None
        key_next = dict(zip(ts_key[:-1], ts_key[1:]))  # the key branch steps between the key's own levels
        z_p, z_r = z_ts, z_ts
        if s.start_noise > 0:  # seeds then differ in where the fake face starts, not only in its surrogate
            lam = s.start_noise
            z_p = (1 - lam ** 2) ** 0.5 * z_ts + lam * _noise(seeds, tuple(z0.shape[1:]), self.device, salt=2)
        with self._t("difp: guided denoising"):
            for t, t_next in zip(ts[:-1], ts[1:]):
                with_key = keys and t in key_next
                zin = torch.cat([z_p] * branches + ([z_r] if with_key else []))
                e = self.net.eps(zin, t, ctx_k if with_key else ctx_p).chunk(branches + int(with_key))
                eps = e[0] if self.distilled else dual_guidance(e[0], e[1], e[2], s.s_id, s.s_sty)
                ref = self.ddim.add_noise(z0, ref_noise, t_next) if t_next > 0 else z0
                g = s.g_rea
                if s.adaptive_realism:
                    g = adaptive_g(global_ssim(self.ddim.predict_x0(z_p, eps, t), z0))
                z_p = m.pin(self.ddim.step(z_p, eps, t, t_next), ref, g, s.realism_k)
                if with_key:
                    z_r = self.ddim.step(z_r, e[-1], t, key_next[t])
        with self._t("difp: vae decode"):
            out = self._render(z_p)
        key_list = None
        if keys:
            target = self._key_target(z0, x, key_crops)
            corr = target - _fit(z_r, target)
            key_list = [FaceKey(_half(z_ts[i]), _half(corr[i]), _half(ids[i]), _half(sty_tok[i]), len(ts_key) - 1,
                                s.strength) for i in range(n)]
        return ProtectResult(out, key_list, sur.float().cpu().numpy(), z0, z_p)

    @torch.no_grad()
    def carry(self, crops: np.ndarray, ref_latents: torch.Tensor, ref_protected: torch.Tensor, cutoff: int,
              keys: bool = True, key_crops: np.ndarray | None = None, render: bool = True) -> ProtectResult:
        """Temporal carry for video frames between two keyframes of a track: the keyframe's protected latent plus
        the low-frequency part (``LP_cutoff``) of how the original moved since then,
        ``z' = z'_key + LP(z - z_key)``: same fake person, current pose and expression, one VAE round trip
        instead of a diffusion run. Keys of carried frames hold ``z0`` itself (``steps = 0``; at a higher key
        resolution, plus the correction to the latent at that resolution). ``render`` False: no decode (the
        result's ``crops`` is None; the caller reuses an earlier face), only the latents and keys."""
        x = to_tensor(crops, self.resolution, self.device)
        z0 = self.net.encode(x)
        z_p = ref_protected + self.model.carry_delta(z0 - ref_latents, cutoff)
        key_list = None
        if keys:
            c = self.model.cfg
            zk = self._key_target(z0, x, key_crops)
            if zk.shape == z0.shape:  # the latent itself, no correction
                corr = torch.zeros_like(zk)
            else:
                zk, corr = z0, zk - _fit(z0, zk)
            key_list = [FaceKey(_half(zk[i]), _half(corr[i]), np.zeros(c.id_dim, np.float16),
                                np.zeros((c.style_tokens, c.token_dim), np.float16), 0, 0.0) for i in range(len(z0))]
        return ProtectResult(self._render(z_p) if render else None, key_list, None, z0, z_p)

    @torch.no_grad()
    def recover_latents(self, keys: Sequence[FaceKey]) -> torch.Tensor:
        if len(keys) == 0:
            raise ValueError("no keys to recover")
        m = self.model
        f = lambda name: torch.as_tensor(np.stack([getattr(k, name) for k in keys]), device=self.device).float()  # noqa: E731
        if len({k.correction.shape for k in keys}) > 1:
            raise ValueError("keys of different key resolutions: recover them apart")
        z, corr, ids, sty = f("z_ts"), f("correction"), f("id_code"), f("style")
        out = torch.empty_like(corr)
        # keys made with different schedules are recovered group by group
        groups: dict[tuple[int, float], list[int]] = {}
        for i, k in enumerate(keys):
            groups.setdefault((int(k.steps), float(k.strength)), []).append(i)
        for (steps, strength), idx in groups.items():
            zi = z[idx]
            if steps == 0:  # a carried frame's key holds the clean latent
                out[idx] = _fit(zi, corr[idx]) + corr[idx]
                continue
            ctx = m.context(m.id_tokens(ids[idx]), sty[idx], len(idx))
            ts = self.ddim.timesteps(steps, strength)
            for t, t_next in zip(ts[:-1], ts[1:]):
                zi = self.ddim.step(zi, self.net.eps(zi, t, ctx), t, t_next)
            out[idx] = _fit(zi, corr[idx]) + corr[idx]
        return out

    @torch.no_grad()
    def recover(self, keys: Sequence[FaceKey]) -> np.ndarray:
        """Original crops (uint8 ``[N, R, R, 3]``, R the keys' resolution) from their keys: DDIM from ``z_ts``
        under the original's conditions back to 0, plus the stored correction, decoded."""
        z = self.recover_latents(keys)
        if z.shape[-1] != self.model.cfg.latent_size:  # a higher key resolution: the PyTorch VAE takes any size
            return to_uint8(self.model.decode(z))
        return to_uint8(self.net.decode(z))
