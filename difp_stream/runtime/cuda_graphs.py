"""PyTorch on a CUDA GPU as a fast path: the U-Net and VAE in fp16 (or bf16), each call replayed from a CUDA graph
captured once per graph and batch size (a few-step sampler makes many small calls, which are launch-bound).

``CudaGraphBackend(model, graphs=False, device="cpu")`` runs the same code eagerly, in any dtype, on any device:
that is how CPU tests check the dtype handling without a GPU."""
from __future__ import annotations

import logging

import copy
from dataclasses import dataclass

import torch

from ..difp.models import DIFPModel, check_size

log = logging.getLogger(__name__)


@dataclass
class _Graph:
    graph: "torch.cuda.CUDAGraph"
    inputs: tuple[torch.Tensor, ...]
    output: torch.Tensor


class CudaGraphBackend:
    name = "torch-cuda"

    def __init__(self, model: DIFPModel, dtype: torch.dtype = torch.float16, device: str = "cuda",
                 graphs: bool = True):
        self.device, self.dtype = torch.device(device), dtype
        self.use_graphs = graphs and self.device.type == "cuda"
        self.net = copy.deepcopy(model).to(self.device, dtype).eval().requires_grad_(False)
        self._graphs: dict[tuple, _Graph] = {}

    def _run(self, name: str, fn, *inputs: torch.Tensor) -> torch.Tensor:
        inputs = tuple(i.to(self.device, self.dtype if i.is_floating_point() else i.dtype) for i in inputs)
        if not self.use_graphs:
            return fn(*inputs).float()
        key = (name,) + tuple(tuple(i.shape) for i in inputs)
        g = self._graphs.get(key)
        if g is None:
            try:
                g = self._capture(fn, inputs)
            except RuntimeError as e:  # a graph that cannot be captured: eager fp16 from now on, said once
                log.warning(f"torch-cuda: CUDA graph capture failed ({e}); running eagerly")
                self.use_graphs = False
                return fn(*inputs).float()
            self._graphs[key] = g
        for static, i in zip(g.inputs, inputs):
            static.copy_(i)
        g.graph.replay()
        return g.output.float()  # a new tensor: the graph's output buffer is overwritten by the next replay

    @staticmethod
    def _capture(fn, inputs: tuple[torch.Tensor, ...]) -> _Graph:
        static = tuple(i.clone() for i in inputs)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside the graph (allocator, cuDNN/cuBLAS plans)
            for _ in range(2):
                fn(*static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = fn(*static)
        return _Graph(graph, static, out)

    # the backend interface (see runtime/base.py)
    @torch.no_grad()
    def eps(self, z: torch.Tensor, t, ctx: torch.Tensor) -> torch.Tensor:
        tt = torch.full((z.shape[0],), int(t), dtype=torch.long, device=self.device)
        return self._run("unet", self.net.eps, z, tt, ctx).to(z.device)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self._run("vae_encoder", self.net.encode, x).to(x.device)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, size: int | None = None) -> torch.Tensor:
        check_size(self.net.cfg.resolution, size)
        return self._run("vae_decoder", self.net.decode, z).to(z.device)

    @torch.no_grad()
    def decode_protected(self, z: torch.Tensor, size: int | None = None) -> torch.Tensor:
        check_size(self.net.cfg.resolution, size)
        return self._run("fast_decoder", self.net.decode_protected, z).to(z.device)
