"""The DIFP networks, built from diffusers' blocks: VAE, conditional U-Net, identity projector, style encoder."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.models.autoencoders.vae import AutoencoderTinyBlock

from .config import ModelConfig
from .realism import cutoff_size, lowpass, realism_step

WEIGHTS_FILE = "difp.safetensors"
CONFIG_FILE = "config.json"


def build_vae(cfg: ModelConfig) -> AutoencoderKL:
    n = len(cfg.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(cfg.vae_channels),
        layers_per_block=cfg.vae_layers_per_block,
        latent_channels=cfg.latent_channels,
        norm_num_groups=16,
        sample_size=cfg.resolution,
        mid_block_add_attention=False,
    )


def build_unet(cfg: ModelConfig) -> UNet2DConditionModel:
    attn = tuple(cfg.unet_attn_levels)
    if len(attn) != len(cfg.unet_channels) or not any(attn):
        raise ValueError("unet_attn_levels needs one flag per U-Net level and at least one True")
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn))
    heads = tuple(max(1, c // cfg.unet_head_dim) for c in cfg.unet_channels)
    return UNet2DConditionModel(
        sample_size=cfg.latent_size,
        in_channels=cfg.latent_channels,
        out_channels=cfg.latent_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=tuple(cfg.unet_channels),
        layers_per_block=cfg.unet_layers_per_block,
        cross_attention_dim=cfg.token_dim,
        attention_head_dim=heads,
        norm_num_groups=16,
    )


class IdentityProjector(nn.Module):
    """Recognition embedding (standardised) -> ``id_tokens`` conditioning tokens."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.tokens, self.dim = cfg.id_tokens, cfg.token_dim
        self.net = nn.Sequential(
            nn.Linear(cfg.id_dim, 256), nn.SiLU(), nn.Linear(256, cfg.id_tokens * cfg.token_dim)
        )

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.net(e).view(e.shape[0], self.tokens, self.dim)


class StyleEncoder(nn.Module):
    """Crop -> ``style_tokens`` tokens. It sees only a small thumbnail of the crop (pose, illumination, skin tone,
    hair colour), so that fine identity detail cannot travel through the style branch."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.size, self.tokens, self.dim = cfg.style_input, cfg.style_tokens, cfg.token_dim
        self.conv = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.SiLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.SiLU(),
        )
        n = 64 * (cfg.style_input // 4) ** 2
        self.head = nn.Linear(n, cfg.style_tokens * cfg.token_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = F.interpolate(x, size=(self.size, self.size), mode="area")
        return self.head(self.conv(t).flatten(1)).view(x.shape[0], self.tokens, self.dim)


class FastDecoder(nn.Module):
    """A small conv-only decoder for the protected faces of a fast model (TAESD-style, diffusers'
    ``AutoencoderTinyBlock``): latent -> ``channels[0]`` at the latent size, one block per level, 2x nearest
    upsampling between levels. About a quarter of the VAE decoder's FLOPs at (64, 48, 32)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        ch = tuple(cfg.fast_decoder_channels)
        if len(ch) != len(cfg.vae_channels):
            raise ValueError("fast_decoder_channels needs one entry per VAE level")
        layers: list[nn.Module] = [nn.Conv2d(cfg.latent_channels, ch[0], 3, padding=1), nn.ReLU()]
        for i, c in enumerate(ch):
            if i:
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            layers.append(AutoencoderTinyBlock(ch[i - 1] if i else c, c, "relu"))
        layers.append(nn.Conv2d(ch[-1], 3, 3, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(torch.tanh(z / 3) * 3)


class DIFPModel(nn.Module):
    """All trained parts plus the statistics the method needs (embedding normalisation, surrogate distribution).

    What every model kind declares (the pipeline reads these, never guesses): ``kind`` (its config's), ``framing``
    (how crops are cut: ``faces/align.framing_transform``), ``latent_shape``, ``rekey`` (a fresh DIFP run at every
    keyframe, or the first one's fake carried), ``keys_have_resolution`` (keys restore faces at a chosen size),
    :meth:`key_shapes` (a key record's arrays), and ``directions`` / ``attributes`` (expression and attribute
    directions, or None)."""

    kind = "pixels"
    framing = "template"  # crops on the 128 px five-point template
    rekey = True  # every keyframe is a fresh DIFP run (its fake person follows from the seed and conditions)
    keys_have_resolution = True  # the original can be encoded at a larger key resolution
    directions = None  # no expression directions in a pixel model
    attributes = None

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.vae = build_vae(cfg)
        self.unet = build_unet(cfg)
        self.id_proj = IdentityProjector(cfg)
        self.style_enc = StyleEncoder(cfg)
        self.null_id = nn.Parameter(torch.randn(1, cfg.id_tokens, cfg.token_dim) * 0.02)
        self.null_sty = nn.Parameter(torch.randn(1, cfg.style_tokens, cfg.token_dim) * 0.02)
        if cfg.distilled:  # [conditional, guided]
            self.mode_tokens = nn.Parameter(torch.randn(2, 1, cfg.token_dim) * 0.02)
        self.fast_dec = FastDecoder(cfg) if cfg.fast_decoder_channels else None
        # identity-embedding statistics of the training set: standardisation and the surrogate distribution
        self.register_buffer("id_mean", torch.zeros(cfg.id_dim))
        self.register_buffer("id_std", torch.ones(cfg.id_dim))
        self.register_buffer("id_chol", torch.eye(cfg.id_dim) * 0.1)
        self.register_buffer("trained", torch.zeros((), dtype=torch.uint8))

    @property
    def latent_shape(self) -> tuple:
        c = self.cfg
        return (c.latent_channels, c.latent_size, c.latent_size)

    def key_shapes(self, key_resolution: int) -> dict:
        """The arrays of one key record (a key resolution above the model's enlarges the correction)."""
        c = self.cfg
        k = c.latent_size * (key_resolution or c.resolution) // c.resolution
        return {"z_ts": list(self.latent_shape), "correction": [c.latent_channels, k, k], "id_code": [c.id_dim],
                "style": [c.style_tokens, c.token_dim]}

    # ---- conditions
    def id_tokens(self, id_codes: torch.Tensor) -> torch.Tensor:
        return self.id_proj((id_codes - self.id_mean) / self.id_std)

    def style_tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.style_enc(x)

    def context(self, id_tok: torch.Tensor | None, sty_tok: torch.Tensor | None, n: int,
                guided: bool = False) -> torch.Tensor:
        """Cross-attention context [n, context_tokens, D]; ``None`` stands for the null token. A distilled model
        gets a last token: ``guided`` asks for the dual-guided eps of these conditions, else the conditional one."""
        i = self.null_id.expand(n, -1, -1) if id_tok is None else id_tok
        s = self.null_sty.expand(n, -1, -1) if sty_tok is None else sty_tok
        parts = [i, s]
        if self.cfg.distilled:
            parts.append(self.mode_tokens[int(guided)].expand(n, -1, -1))
        elif guided:
            raise ValueError("only a distilled model gives the guided eps in one call")
        return torch.cat(parts, dim=1)

    # ---- latent space
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(x).latent_dist.mean * self.cfg.latent_scale

    def decode(self, z: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """Latents -> images in [-1, 1] at the model's resolution (``size``: None or that resolution)."""
        check_size(self.cfg.resolution, size)
        return self.vae.decode(z / self.cfg.latent_scale).sample.clamp(-1, 1)

    def decode_protected(self, z: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """Render protected latents: the fast decoder where the model has one, else the VAE decoder."""
        check_size(self.cfg.resolution, size)
        if self.fast_dec is None:
            return self.decode(z)
        return self.fast_dec(z / self.cfg.latent_scale).clamp(-1, 1)

    def eps(self, z: torch.Tensor, t: torch.Tensor | int, ctx: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(t):
            t = torch.full((z.shape[0],), int(t), device=z.device, dtype=torch.long)
        return self.unet(z, t, encoder_hidden_states=ctx).sample

    # ---- realism control (paper Eq. 12-13)
    def pin(self, z: torch.Tensor, ref: torch.Tensor, g_rea: float | torch.Tensor, k: float) -> torch.Tensor:
        """``z - LP_H(z) + LP_H(ref)`` with ``H`` from ``g_rea`` (one value, or one per item)."""
        size = z.shape[-1]
        if torch.is_tensor(g_rea):
            h = torch.tensor([cutoff_size(float(v), size, k) for v in g_rea], device=z.device)
        else:
            h = cutoff_size(g_rea, size, k)
        return realism_step(z, ref, h)

    def carry_delta(self, delta: torch.Tensor, cutoff: int) -> torch.Tensor:
        """What of the original's motion since the keyframe a carried frame takes: its low frequencies."""
        return lowpass(delta, cutoff)

    # ---- persistence
    def save(self, directory: str | Path, half: bool = True) -> None:
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        sd = {k: (v.half() if half and v.is_floating_point() else v).contiguous() for k, v in self.state_dict().items()}
        save_file(sd, str(d / WEIGHTS_FILE))
        (d / CONFIG_FILE).write_text(self.cfg.to_json())

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu") -> "DIFPModel":
        from safetensors.torch import load_file

        d = Path(directory)
        if not (d / CONFIG_FILE).is_file() or not (d / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(f"no DIFP model in {d} (expected {CONFIG_FILE} and {WEIGHTS_FILE})")
        model = cls(ModelConfig.load(d / CONFIG_FILE))
        sd = load_file(str(d / WEIGHTS_FILE))
        sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
        model.load_state_dict(sd)
        return model.to(device).eval()

    def fingerprint(self) -> str:
        return fingerprint(self)

    @property
    def is_trained(self) -> bool:
        return bool(self.trained.item())


def check_size(resolution: int, size: int | None) -> None:
    """A pixel model decodes at its own resolution only (a style-space model renders at any size)."""
    if size is not None and size != resolution:
        raise ValueError(f"this model decodes at {resolution} px, not {size}")


def fingerprint(model: nn.Module) -> str:
    """Short hash of a model's network (its config less the recommended sampling values, which no key or engine
    depends on) and weights (as stored, fp16): key files and engine caches name the model that made them."""
    import hashlib
    import json

    net = {k: v for k, v in json.loads(model.cfg.to_json()).items() if k != "sampling"}
    h = hashlib.sha256(json.dumps(net, indent=2).encode())
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update((v.half() if v.is_floating_point() else v).detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def param_count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())
