"""Early exits of the face generator: small trained heads that turn its 128² or 256² feature maps into a picture.

The shipped synthesis graph keeps an image head on its last block only (512² wavelets), so a small face costs a full
render. Each head here reads the last feature map of one block (``LeakyRelu_542``: 256 channels at 128²;
``LeakyRelu_642``: 128 channels at 256²) and the styles of the layers the exit skips (the fine layers: colour and
light), and is trained against the full render averaged down to its size (``difp-stream encoder heads``). With
OpenVINO on one core the 128² features are reached in 15% of the 512 render's time and the 256² in 36%.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

# size -> (feature node, channels, index of the first style layer the exit skips)
EXITS = {128: ("LeakyRelu_542", 256, 16), 256: ("LeakyRelu_642", 128, 19)}
N_LAYERS = 23
STYLE_DIM = 512  # the generator's style width (defined here: mobilestylegan.py loads these heads)


class ExitHead(nn.Module):
    """``head(features, w_plus) -> RGB [B, 3, s, s]`` in [-1, 1] (unclamped). A 1x1 linear read-out of the features
    (what a ``to_img`` layer does) plus a small convolutional correction modulated by the skipped layers' styles,
    then a colour transform predicted from those styles."""

    def __init__(self, size: int, width: int = 48):
        super().__init__()
        if size not in EXITS:
            raise ValueError(f"early exits exist for sizes {sorted(EXITS)}, not {size}")
        self.size, self.width = size, width
        self.node, cin, self.first_skipped = EXITS[size]
        self.linear = nn.Conv2d(cin, 3, 1)
        self.reduce = nn.Conv2d(cin, width, 1)
        self.norm = nn.GroupNorm(8, width)
        self.film = nn.Linear(STYLE_DIM, 2 * width)  # from the mean of the skipped layers' (normalised) styles
        self.conv = nn.Conv2d(width, width, 3, padding=1)
        self.out = nn.Conv2d(width, 3, 3, padding=1)
        self.colour = nn.Linear(STYLE_DIM, 12)  # a per-face colour transform (3x3 + offset), bounded: what the
        #                                         skipped fine layers mostly add is colour and contrast
        for m in (self.film, self.out, self.colour):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
        self.register_buffer("w_mean", torch.zeros(STYLE_DIM))
        self.register_buffer("w_std", torch.ones(STYLE_DIM))

    def forward(self, feats: torch.Tensor, w_plus: torch.Tensor) -> torch.Tensor:
        skipped = ((w_plus[:, self.first_skipped:] - self.w_mean) / self.w_std).mean(1)
        gamma, beta = self.film(skipped).chunk(2, dim=1)
        h = F.leaky_relu(self.norm(self.reduce(feats)), 0.2)
        h = h * (1 + torch.tanh(gamma)[:, :, None, None]) + beta[:, :, None, None]
        h = F.leaky_relu(self.conv(h), 0.2)
        rgb = self.linear(feats) + self.out(h)
        c = 0.5 * torch.tanh(self.colour(skipped))
        mix, offset = c[:, :9].view(-1, 3, 3), c[:, 9:]
        return rgb + torch.einsum("bij,bjhw->bihw", mix, rgb) + offset[:, :, None, None]

    def save(self, folder: str | Path) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"exit{self.size}.json").write_text(json.dumps({"size": self.size, "width": self.width}))
        save_file({k: v.detach().half().contiguous() for k, v in self.state_dict().items()},
                  str(folder / f"exit{self.size}.safetensors"))
        (folder / f"exit{self.size}.safetensors").chmod(0o644)  # shipped as package data: readable by all

    @classmethod
    def load(cls, folder: str | Path, size: int) -> "ExitHead | None":
        """The head for ``size`` in ``folder``, or None when there is none."""
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / f"exit{size}.json").exists():
            return None
        head = cls(**json.loads((folder / f"exit{size}.json").read_text()))
        head.load_state_dict({k: v.float() for k, v in load_file(str(folder / f"exit{size}.safetensors")).items()})
        return head.eval()
