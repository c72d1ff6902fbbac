"""The face generator (and its style encoder) on each runtime: PyTorch as is, or the same network exported to ONNX
once per render size and batch (cached) and run by ONNX Runtime or OpenVINO. Same input, same picture: each
backend is checked against PyTorch by the tests and the benchmark."""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import torch

from .cache import cache_dir

KINDS = ("torch", "onnxruntime", "openvino")


def _fingerprint(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes()[:4096])  # a cheap but weight-bound digest
        h.update(str(tuple(v.shape)).encode())
    return h.hexdigest()[:16]


class _Fixed(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class Runner:
    """``runner(x) -> np.ndarray``: a module's forward on ``kind`` for inputs of one shape (exported per shape)."""

    def __init__(self, module: torch.nn.Module, fn, name: str, kind: str = "torch", threads: int | None = None,
                 cache: Path | None = None):
        if kind not in KINDS:
            raise ValueError(f"backend must be one of {KINDS}, not {kind!r}")
        self.module, self.fn, self.kind, self.threads = module, fn, kind, threads
        self.dir = (cache or cache_dir() / "onnx") / f"{name}-{_fingerprint(module)}"
        self.sessions: dict[tuple, object] = {}

    def _onnx(self, shape: tuple) -> Path:
        path = self.dir / f"{'x'.join(map(str, shape))}.onnx"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.stem + ".partial.onnx")
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's notes on shapes fixed at export: wanted here
                torch.onnx.export(_Fixed(self.fn), (torch.zeros(shape),), str(tmp), input_names=["x"],
                                  output_names=["y"], opset_version=17, dynamo=False)
            tmp.replace(path)
        return path

    def _session(self, shape: tuple):
        if shape not in self.sessions:
            path = self._onnx(shape)
            if self.kind == "onnxruntime":
                import onnxruntime as ort

                so = ort.SessionOptions()
                if self.threads:
                    so.intra_op_num_threads = self.threads
                s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
                self.sessions[shape] = lambda x, s=s: s.run(None, {"x": x})[0]
            else:
                import openvino as ov

                core = ov.Core()
                cfg = {"INFERENCE_PRECISION_HINT": "f32"}
                if self.threads:
                    cfg["INFERENCE_NUM_THREADS"] = self.threads
                c = core.compile_model(core.read_model(str(path)), "CPU", cfg)
                self.sessions[shape] = lambda x, c=c: c(x)[0]
        return self.sessions[shape]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, np.float32)
        if self.kind == "torch":
            with torch.no_grad():
                return self.fn(torch.from_numpy(x)).numpy()
        return np.asarray(self._session(tuple(x.shape))(x))


def renderer(generator, size: int, kind: str = "torch", threads: int | None = None, cache: Path | None = None) -> Runner:
    """W+ styles [B, 23, 512] -> RGB [B, 3, size, size] in [-1, 1] on ``kind``."""
    return Runner(generator, lambda w: generator.synthesis(w, size), f"gan{size}", kind, threads, cache)


def encoder_runner(encoder, kind: str = "torch", threads: int | None = None) -> Runner:
    """FFHQ-aligned crops [B, 3, s, s] in [-1, 1] -> W+ [B, 23, 512] on ``kind``."""
    return Runner(encoder, encoder, f"encoder{encoder.cfg.size}", kind, threads)
