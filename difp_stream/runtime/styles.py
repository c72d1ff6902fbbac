"""The runtime of a style-space DIFP model (``difp/stylespace.py``): the noise predictor is a small MLP (PyTorch),
the cost is the generator's render and the encoder, which run on OpenVINO (the fastest CPU runtime measured here,
``bench/generator.py``) or ONNX Runtime, exported once per size and batch (``runtime/generator.py``)."""
from __future__ import annotations

import torch

from .generator import Runner, encoder_runner, renderer


class StyleBackend:
    def __init__(self, model, kind: str = "openvino", threads: int | None = None):
        self.model, self.name, self.threads = model, kind, threads
        self._enc = encoder_runner(model.encoder, kind, threads)
        self._render: dict[int, object] = {}

    def eps(self, z: torch.Tensor, t, ctx: torch.Tensor) -> torch.Tensor:
        return self.model.eps(z, t, ctx)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.to_latent(torch.from_numpy(self._enc(x.detach().cpu().numpy())).to(x.device))

    def decode(self, z: torch.Tensor, size: int | None = None) -> torch.Tensor:
        size = size or self.model.cfg.render_size
        if size not in self._render:
            self._render[size] = renderer(self.model.generator, size, self.name, self.threads)
        styles = self.model.to_styles(z).detach().cpu().numpy()
        return torch.from_numpy(self._render[size](styles)).to(z.device).clamp(-1, 1)

    def decode_protected(self, z: torch.Tensor, size: int | None = None) -> torch.Tensor:
        return self.decode(z, size)


def export_graphs(model, folder=None, sizes=(128, 256, 512)) -> list:
    """The ONNX graphs the style model's runtime uses (encoder, and the renders at ``sizes``; batch 1), exported into
    ``folder`` (default: the cache, where the runtime finds them) and returned as paths."""
    enc = model.encoder
    runners = [Runner(enc, enc, f"encoder{enc.cfg.size}", "onnxruntime", cache=folder)]
    shapes = [(1, 3, enc.cfg.size, enc.cfg.size)]
    for s in sizes:
        runners.append(renderer(model.generator, s, "onnxruntime", cache=folder))
        shapes.append((1, model.cfg.n_layers, model.cfg.style_dim))
    return [r._onnx(shape) for r, shape in zip(runners, shapes)]
