"""Runtime backends behind one small interface: ``eps(z, t, ctx)``, ``encode(x)``, ``decode(z)`` on torch tensors.

- ``torch``: the DIFPModel itself (CPU or CUDA).
- ``onnxruntime``: the exported graphs on ONNX Runtime (CPU; CUDA / TensorRT execution providers when installed).
- ``tensorrt``: engines built from the same ONNX files (see ``runtime/tensorrt.py``), GPU only.
- ``torch-cuda``: PyTorch on a CUDA GPU in fp16 with CUDA graphs (see ``runtime/cuda_graphs.py``), GPU only.
``select(name, model)`` resolves ``auto`` and falls back with a one-line reason."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from ..difp.models import DIFPModel

CACHE = Path.home() / ".cache" / "difp-stream"


class OrtBackend:
    name = "onnxruntime"

    def __init__(self, model: DIFPModel, onnx_dir: str | Path | None = None, providers: list[str] | None = None,
                 threads: int | None = None):
        import onnxruntime as ort

        d = Path(onnx_dir) if onnx_dir else CACHE / "onnx" / model.fingerprint()
        if not (d / "export.json").is_file():
            from .onnx_export import export

            export(model, d, log=lambda m: None)
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

    @staticmethod
    def _np(t: torch.Tensor) -> np.ndarray:
        return t.detach().float().cpu().numpy()

    def eps(self, z: torch.Tensor, t, ctx: torch.Tensor) -> torch.Tensor:
        tt = np.full((z.shape[0],), int(t), np.int64)
        out = self.sess["unet"].run(None, {"z": self._np(z), "t": tt, "ctx": self._np(ctx)})[0]
        return torch.from_numpy(out).to(z.device)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.sess["vae_encoder"].run(None, {"x": self._np(x)})[0]).to(x.device)

    def decode(self, z: torch.Tensor, graph: str = "vae_decoder") -> torch.Tensor:
        return torch.from_numpy(self.sess[graph].run(None, {"z": self._np(z)})[0]).to(z.device)

    def decode_protected(self, z: torch.Tensor) -> torch.Tensor:
        return self.decode(z, "fast_decoder" if "fast_decoder" in self.sess else "vae_decoder")


def available() -> dict[str, str | None]:
    """Backend -> None when usable here, else the reason it is not."""
    out: dict[str, str | None] = {"torch": None}
    try:
        import onnxruntime  # noqa: F401  (availability check)

        out["onnxruntime"] = None
    except ImportError as e:
        out["onnxruntime"] = f"onnxruntime not installed ({e})"
    try:
        import tensorrt  # noqa: F401

        out["tensorrt"] = None if torch.cuda.is_available() else "no CUDA GPU"
    except ImportError:
        out["tensorrt"] = "TensorRT is not installed"
    out["torch-cuda"] = None if torch.cuda.is_available() else "no CUDA GPU"
    return out


def select(name: str, model: DIFPModel, device: str = "cpu", log=None):
    """The backend object for ``name`` (``auto``: on a GPU TensorRT where installed, else PyTorch fp16 with CUDA
    graphs; on CPU ONNX Runtime, else PyTorch). Returns ``(backend or None for plain torch, name used)``."""
    log = log or (lambda m: print(m, file=sys.stderr))
    avail = available()
    order = [name] if name != "auto" else (["tensorrt", "torch-cuda", "torch"] if device.startswith("cuda") else ["onnxruntime", "torch"])
    for cand in order:
        why = avail.get(cand, f"unknown backend {cand}")
        if why is None:
            try:
                if cand == "torch":
                    return None, "torch"
                if cand == "onnxruntime":
                    return OrtBackend(model), cand
                if cand == "tensorrt":
                    from .tensorrt import TrtBackend

                    return TrtBackend(model), cand
                if cand == "torch-cuda":
                    from .cuda_graphs import CudaGraphBackend

                    return CudaGraphBackend(model), cand
            except Exception as e:  # fall back, saying why in one line
                why = f"{type(e).__name__}: {e}"
        log(f"backend {cand} unavailable ({why}); falling back")
    return None, "torch"
