"""ONNX Runtime backend: the exported U-Net and VAE graphs (CPU; CUDA execution provider when installed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..difp.models import DIFPModel, check_size
from . import cache


class OrtBackend:
    name = "onnxruntime"

    def __init__(self, model: DIFPModel, onnx_dir: str | Path | None = None, providers: list[str] | None = None,
                 threads: int | None = None):
        import onnxruntime as ort

        d = cache.onnx_dir(model, onnx_dir)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            opts.intra_op_num_threads = threads
        avail = ort.get_available_providers()
        self.providers = [p for p in (providers or ["CUDAExecutionProvider", "CPUExecutionProvider"]) if p in avail]
        names = ["unet", "vae_encoder", "vae_decoder"] + (["fast_decoder"] if model.fast_dec is not None else [])
        self.sess = {n: ort.InferenceSession(str(d / f"{n}.onnx"), opts, providers=self.providers) for n in names}
        self.onnx_dir = d
        self.resolution = model.cfg.resolution

    @staticmethod
    def _np(t: torch.Tensor) -> np.ndarray:
        return t.detach().float().cpu().numpy()

    def eps(self, z: torch.Tensor, t, ctx: torch.Tensor) -> torch.Tensor:
        tt = np.full((z.shape[0],), int(t), np.int64)
        out = self.sess["unet"].run(None, {"z": self._np(z), "t": tt, "ctx": self._np(ctx)})[0]
        return torch.from_numpy(out).to(z.device)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.sess["vae_encoder"].run(None, {"x": self._np(x)})[0]).to(x.device)

    def decode(self, z: torch.Tensor, size: int | None = None, graph: str = "vae_decoder") -> torch.Tensor:
        check_size(self.resolution, size)
        return torch.from_numpy(self.sess[graph].run(None, {"z": self._np(z)})[0]).to(z.device)

    def decode_protected(self, z: torch.Tensor, size: int | None = None) -> torch.Tensor:
        return self.decode(z, size, "fast_decoder" if "fast_decoder" in self.sess else "vae_decoder")
