"""From a face in a frame to the generator's style space: the FFHQ alignment from five landmarks, and the encoder
(an aligned crop -> per-layer styles W+).

The generator draws faces framed as FFHQ's were (a square around eyes and mouth, hair and chin included). A real
face is cut out the same way from the detector's five points (eyes, nose, mouth corners) by the FFHQ recipe, with
the eye and mouth centres taken from those points; the same transform, inverted, takes a rendered face back into
the frame. Generated faces are re-aligned the same way for training, so training and use see one framing."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .mobilestylegan import STYLE_DIM

N_LAYERS = 23


def ffhq_transform(landmarks: np.ndarray, size: int) -> np.ndarray:
    """2x3 affine taking frame pixels to an FFHQ-aligned ``size`` x ``size`` crop, from RetinaFace's 5 points."""
    lm = np.asarray(landmarks, np.float64).reshape(5, 2)
    eye_l, eye_r, mouth = lm[0], lm[1], (lm[3] + lm[4]) / 2
    eye_avg = (eye_l + eye_r) / 2
    eye_to_eye, eye_to_mouth = eye_r - eye_l, mouth - eye_avg
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])  # minus the eye-to-mouth vector turned 90 deg
    x /= max(np.hypot(*x), 1e-6)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.array([-x[1], x[0]])
    c = eye_avg + eye_to_mouth * 0.1
    src = np.float32([c - x - y, c - x + y, c + x + y])  # top-left, bottom-left, bottom-right of the crop
    dst = np.float32([[0, 0], [0, size], [size, size]])
    return cv2.getAffineTransform(src, dst)


def ffhq_crop(frame: np.ndarray, landmarks: np.ndarray, size: int) -> np.ndarray:
    m = ffhq_transform(landmarks, size)
    scale = np.sqrt(abs(np.linalg.det(m[:, :2])))
    return cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT101)


@dataclass
class EncoderConfig:
    size: int = 128  # input crop (FFHQ-aligned), pixels
    channels: tuple = (32, 64, 128, 192, 256)  # one residual stage each; the stem and all stages but the first
    #                                           halve the size (128 -> 4: under 1 GFLOP a face)
    layer_rank: int = 32  # per-layer offsets (W+) through a shared basis of this rank
    head_channels: int = 64  # the last features squeezed to this many channels before the dense head (few
    #                          parameters: the encoder learns from a few thousand pairs); 0: flatten them all

    def to_json(self) -> str:
        return json.dumps(asdict(self))


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.n1, self.n2 = nn.GroupNorm(8, cout), nn.GroupNorm(8, cout)
        self.skip = nn.Conv2d(cin, cout, 1, stride) if (cin != cout or stride != 1) else nn.Identity()

    def forward(self, x):
        h = F.silu(self.n1(self.c1(x)))
        return F.silu(self.n2(self.c2(h)) + self.skip(x))


class StyleEncoder(nn.Module):
    """``forward(crops) -> W+ [B, 23, 512]``: crops [B, 3, size, size] in [-1, 1], FFHQ-aligned. The styles are
    the mean style plus one shared offset (what generated pairs teach) plus small per-layer offsets."""

    def __init__(self, cfg: EncoderConfig | None = None, w_mean: torch.Tensor | None = None,
                 w_std: torch.Tensor | None = None):
        super().__init__()
        self.cfg = cfg = cfg or EncoderConfig()
        ch = list(cfg.channels)
        self.stem = nn.Conv2d(3, ch[0], 3, 2, 1)
        self.stages = nn.Sequential(*[_Block(a, b, 1 if i == 0 else 2) for i, (a, b) in
                                      enumerate(zip([ch[0]] + ch[:-1], ch))])
        final = cfg.size >> len(ch)
        squeeze = [nn.Conv2d(ch[-1], cfg.head_channels, 1), nn.SiLU()] if cfg.head_channels else []
        flat = (cfg.head_channels or ch[-1]) * final * final
        self.head = nn.Sequential(*squeeze, nn.Flatten(), nn.Linear(flat, 1024), nn.SiLU(), nn.Linear(1024, STYLE_DIM))
        self.layer_coef = nn.Linear(STYLE_DIM, N_LAYERS * cfg.layer_rank)
        self.layer_basis = nn.Parameter(torch.zeros(cfg.layer_rank, STYLE_DIM))
        nn.init.zeros_(self.layer_coef.weight)
        nn.init.zeros_(self.layer_coef.bias)
        self.register_buffer("w_mean", w_mean if w_mean is not None else torch.zeros(STYLE_DIM))
        self.register_buffer("w_std", w_std if w_std is not None else torch.ones(STYLE_DIM))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1:] != (3, self.cfg.size, self.cfg.size):
            raise ValueError(f"the encoder takes crops [B, 3, {self.cfg.size}, {self.cfg.size}], got {list(x.shape)}")
        h = self.head(self.stages(F.silu(self.stem(x))))  # normalised offset from the mean style
        w = self.w_mean + h * self.w_std
        per_layer = (self.layer_coef(h).view(-1, N_LAYERS, self.cfg.layer_rank) @ self.layer_basis) * self.w_std
        return w[:, None, :] + per_layer

    def save(self, folder: str | Path) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "encoder.json").write_text(self.cfg.to_json())
        save_file({k: v.detach().half().contiguous() for k, v in self.state_dict().items()},
                  str(folder / "encoder.safetensors"))

    @classmethod
    def load(cls, folder: str | Path) -> "StyleEncoder":
        from safetensors.torch import load_file

        folder = Path(folder)
        d = {"head_channels": 0, **json.loads((folder / "encoder.json").read_text())}  # (first runs: no squeeze)
        enc = cls(EncoderConfig(**{**d, "channels": tuple(d["channels"])}))
        enc.load_state_dict({k: v.float() for k, v in load_file(str(folder / "encoder.safetensors")).items()})
        return enc.eval()


SHIPPED = Path(__file__).resolve().parents[1] / "weights" / "encoder"


def load_encoder(folder: str | Path | None = None) -> StyleEncoder:
    """The shipped encoder (or one from ``difp-stream encoder train``'s ``RUN/model``)."""
    return StyleEncoder.load(folder or SHIPPED)


def to_tensor(crops: np.ndarray) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float [B, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1
