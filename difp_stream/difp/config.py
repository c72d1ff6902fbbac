"""Configuration objects: one for the model (sizes, resolution, schedule), one for sampling (a run's knobs)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path


@dataclass
class ModelConfig:
    """Everything that fixes the shapes of the DIFP networks. Saved beside the weights as ``config.json``."""

    resolution: int = 64  # aligned crop side in pixels (template of ../faces/align.py scaled to this)
    # VAE (diffusers AutoencoderKL): 64 -> 16 with three blocks
    vae_channels: tuple[int, ...] = (32, 64, 128)
    vae_layers_per_block: int = 1
    latent_channels: int = 8
    latent_scale: float = 1.0  # multiplies VAE latents so that they have unit std (measured after VAE training)
    # U-Net (diffusers UNet2DConditionModel) on latents
    unet_channels: tuple[int, ...] = (48, 96, 128)
    unet_attn_levels: tuple[bool, ...] = (False, True, True)  # cross-attention per level (none at full latent size)
    unet_layers_per_block: int = 1
    unet_head_dim: int = 32
    # conditions: identity embedding (dlib ResNet, 128-D) -> tokens; crop thumbnail -> style tokens
    id_dim: int = 128
    id_tokens: int = 2
    style_tokens: int = 2
    style_input: int = 16  # the style encoder sees the crop downsampled to this size: pose, light, colour, not identity
    token_dim: int = 128
    # noise schedule (DDPM, T steps)
    train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"
    # a distilled ("fast") model: its U-Net gives the dual-guided eps in one call, for the sampling it was distilled
    # with (keys: steps, strength, s_id, s_sty); an extra mode token in the context selects guided or conditional eps
    distilled: dict = field(default_factory=dict)
    # > 0 channels: a small conv decoder (diffusers' AutoencoderTiny blocks) renders the protected faces; keys are
    # still decoded by the VAE's own decoder
    fast_decoder_channels: tuple[int, ...] = ()
    # sampling settings measured best for these weights (override SamplingConfig's paper defaults; CLI options win)
    sampling: dict = field(default_factory=dict)

    def sampling_config(self, **overrides) -> "SamplingConfig":
        """The paper's defaults, then this model's recommended values, then ``overrides`` that are not None."""
        known = {f.name for f in fields(SamplingConfig)}
        kw = {k: v for k, v in self.sampling.items() if k in known}
        asked = {k: v for k, v in overrides.items() if v is not None}
        kw.update(asked)
        inv = kw.get("inversion_steps", 0)
        if inv and "inversion_steps" not in asked and kw.get("steps", SamplingConfig.steps) % inv:
            kw["inversion_steps"] = 0  # the model's value does not fit the steps asked for: invert with those
        return SamplingConfig(**kw)

    @property
    def context_tokens(self) -> int:
        return self.id_tokens + self.style_tokens + (1 if self.distilled else 0)

    @property
    def latent_size(self) -> int:
        return self.resolution // 2 ** (len(self.vae_channels) - 1)

    def to_json(self) -> str:
        d = asdict(self)
        for k in ("distilled", "fast_decoder_channels"):  # optional parts: absent when unused (same fingerprints)
            if not d[k]:
                del d[k]
        return json.dumps(d, indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known}
        return cls(**kw)

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))


@dataclass
class SamplingConfig:
    """Knobs of one protection run (paper defaults where the paper gives one)."""

    steps: int = 4  # DDIM steps from t_s down to 0
    inversion_steps: int = 0  # DDIM inversion steps from 0 up to t_s, the key's schedule (0: same as steps)
    strength: float = 0.8  # S_n: t_s = S_n * T
    s_id: float = 3.0  # identity guidance scale (pushes towards the surrogate identity)
    s_sty: float = 1.0  # style guidance scale (keeps pose, light, colour of the original)
    g_rea: float = 0.6  # realism scale: larger -> fewer low frequencies pinned to the original
    realism_k: float = -3.0  # the constant k of H = -g_rea (M - 1) + (M + k)
    adaptive_realism: bool = False  # paper Eq. 14: g_rea per step from SSIM(prediction, reference)
    min_surrogate_distance: float = 0.8  # surrogate identity must be at least this far (L2) from the original
    surrogate_spread: float = 1.0  # surrogates drawn with this multiple of the training identities' spread
    start_noise: float = 0.0  # share of fresh (seeded) noise mixed into the inverted start latent of the fake face
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.inversion_steps < 0:
            raise ValueError(f"inversion_steps must be >= 0, got {self.inversion_steps}")
        if not 0.0 < self.strength <= 1.0:
            raise ValueError(f"strength (S_n) must be in (0, 1], got {self.strength}")
        if not 0.0 <= self.g_rea <= 1.0:
            raise ValueError(f"g_rea must be in [0, 1], got {self.g_rea}")
        if not 0.0 <= self.start_noise <= 1.0:
            raise ValueError(f"start_noise must be in [0, 1], got {self.start_noise}")
        if self.surrogate_spread <= 0:
            raise ValueError(f"surrogate_spread must be > 0, got {self.surrogate_spread}")
