"""MobileStyleGAN (FFHQ, 1024 px): the pretrained photoreal face generator, run by PyTorch.

The networks come from the ``random-face`` wheel (OpenVINO IR) and are converted once into the project's own files
(``weights/mobilestylegan/``: the graph as JSON, its tensors as safetensors; ``export/convert_mobilestylegan.py``).
See README, "Face generator", for the licence: research / non-commercial, like FFHQ and StyleGAN2.

* ``mapping(z) -> w``: noise [B, 512] to a style [B, 512] (W space).
* ``synthesis(w, size)``: a style [B, 512] or per-layer styles [B, 23, 512] (W+, coarse to fine) to an RGB face in
  [-1, 1], FFHQ-aligned, at ``size`` 1024 (the full graph) or 512 / 256 / 128: the graph stops at its last wavelet
  stage, whose low band is the 512 px picture (the inverse wavelet step is skipped). 256 and 128 are early exits
  where trained heads ship (``heads.py``: the graph stops at that block's features), else the 512 picture averaged
  down (``early=False`` asks for that).
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .heads import EXITS, STYLE_DIM, ExitHead
from .ir import IRGraph, Node

WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "mobilestylegan"
SIZES = (128, 256, 512, 1024)
_WAVELET = "Add_754"  # the last stage's 12 wavelet channels at 512 px (low band first), before the inverse step


def save_graph(g: IRGraph, consts: dict[str, np.ndarray], folder: Path, name: str) -> None:
    """Write a graph in the project's format: ``NAME.json`` (nodes) and ``NAME.safetensors`` (constants, fp16 for
    floating-point ones)."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    nodes = [{"id": n.id, "type": n.type, "name": n.name, "attrs": n.attrs, "inputs": n.inputs,
              "out_ports": n.out_ports} for n in g.nodes]
    (folder / f"{name}.json").write_text(json.dumps(nodes))
    tensors = {f"c{k}": (v.astype(np.float16) if v.dtype == np.float32 else np.ascontiguousarray(v))
               for k, v in consts.items()}
    save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.safetensors").chmod(0o644)


def load_graph(folder: Path, name: str) -> IRGraph:
    from safetensors.numpy import load_file

    try:
        nodes = [Node(d["id"], d["type"], d["name"], d["attrs"], [tuple(i) for i in d["inputs"]], d["out_ports"])
                 for d in json.loads((folder / f"{name}.json").read_text())]
        consts = {k[1:]: v for k, v in load_file(str(folder / f"{name}.safetensors")).items()}
    except FileNotFoundError:
        raise FileNotFoundError(f"the face generator's weights are missing from {folder} (run "
                                "export/convert_mobilestylegan.py)") from None
    return IRGraph(nodes, consts)


class Generator(torch.nn.Module):
    def __init__(self, mapping: IRGraph, synthesis: IRGraph, heads: dict | None = None):
        super().__init__()
        self.mapping_net, self.synthesis_net = mapping, synthesis
        self.heads = torch.nn.ModuleDict({str(k): v for k, v in (heads or {}).items()})
        param = next(n.id for n in synthesis.nodes if n.type == "Parameter")
        # the style affines (one per modulated layer), in the order the network runs them: coarse to fine
        mats = [n for n in synthesis.nodes if n.type == "MatMul" and n.inputs[0][0] == param]
        self.style_layers = sorted(mats, key=lambda n: int(re.search(r"(\d+)", n.name).group(1)))
        self.n_layers = len(self.style_layers)
        self.layer_channels = [int(synthesis._const(n.inputs[1][0]).shape[0]) for n in self.style_layers]

    @torch.no_grad()
    def mean_style(self, n: int = 4096, seed: int = 0) -> torch.Tensor:
        """The average style [512] of ``n`` random faces (pulling styles toward it: the truncation trick)."""
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, STYLE_DIM, generator=g)
        return torch.cat([self.mapping(z[i:i + 512]) for i in range(0, n, 512)]).mean(0)

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != STYLE_DIM:
            raise ValueError(f"mapping expects noise of shape [B, {STYLE_DIM}], got {list(z.shape)}")
        return self.mapping_net({"var": z})[self._result(self.mapping_net)]

    @staticmethod
    def _result(g: IRGraph) -> str:
        return next(n.name for n in g.nodes if n.type == "Result")

    def plus(self, w: torch.Tensor) -> torch.Tensor:
        """Per-layer styles [B, 23, 512] from a style [B, 512] or W+ (checked)."""
        if w.dim() == 2 and w.shape[1] == STYLE_DIM:
            return w[:, None].expand(-1, self.n_layers, -1)
        if w.dim() == 3 and w.shape[1:] == (self.n_layers, STYLE_DIM):
            return w
        raise ValueError(f"styles must be [B, {STYLE_DIM}] or [B, {self.n_layers}, {STYLE_DIM}], got {list(w.shape)}")

    def features(self, w: torch.Tensor, nodes: list[str]) -> dict[str, torch.Tensor]:
        """The values of the synthesis graph's ``nodes`` for styles ``w`` (the graph stops once they are known). A
        single style [B, 512] runs the graph as shipped; W+ replaces each layer's affine with one on its own style."""
        plus = self.plus(w)
        replace = {} if w.dim() == 2 else {
            n.name: plus[:, k] @ self.synthesis_net._const(n.inputs[1][0]).transpose(0, 1)
            for k, n in enumerate(self.style_layers)}
        return self.synthesis_net({"style": plus[:, 0]}, replace, outputs=nodes)

    def synthesis(self, w: torch.Tensor, size: int = 1024, early: bool = True) -> torch.Tensor:
        """RGB [B, 3, size, size] in [-1, 1] from ``w`` [B, 512] or W+ ``w`` [B, n_layers, 512]."""
        if size not in SIZES:
            raise ValueError(f"size must be one of {SIZES}, not {size}")
        if size == 1024:
            return self.features(w, [self._result(self.synthesis_net)])[self._result(self.synthesis_net)]
        if early and str(size) in self.heads:
            head = self.heads[str(size)]
            return head(self.features(w, [head.node])[head.node], self.plus(w))
        low = self.features(w, [_WAVELET])[_WAVELET][:, :3] * 0.5
        return low if size == 512 else F.avg_pool2d(low, 512 // size)

    def forward(self, w: torch.Tensor, size: int = 1024) -> torch.Tensor:
        return self.synthesis(w, size)


@lru_cache(maxsize=2)
def load_generator(folder: str | None = None, device: str = "cpu") -> Generator:
    """The shipped generator (or one converted into ``folder``), in eval mode."""

    d = Path(folder) if folder else WEIGHTS
    heads = {s: h for s in EXITS if (h := ExitHead.load(d, s)) is not None}
    gen = Generator(load_graph(d, "mapping"), load_graph(d, "synthesis"), heads).to(device).eval()
    return gen.requires_grad_(False)  # pretrained and frozen (gradients still reach its inputs)


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """[-1, 1] RGB [B, 3, H, W] to uint8 [B, H, W, 3]."""
    return ((img.clamp(-1, 1) + 1) * 127.5 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
