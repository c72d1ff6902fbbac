"""TensorRT 10 engines for the U-Net and the VAE, built from the ONNX export (fp16, one optimisation profile for
batch 1..max_batch, a timing cache), cached under ``engines/`` keyed by GPU, TensorRT version and model
fingerprint, and run with I/O buffers that stay on the GPU (torch CUDA tensors).

TensorRT is not installable in this project's CI or on its lent GPUs; this path is tested wherever
``import tensorrt`` works and a GPU exists, and skipped elsewhere."""
from __future__ import annotations

from pathlib import Path

import torch

from ..difp.models import DIFPModel, check_size
from . import cache


def engine_path(name: str, fingerprint: str, root: Path | None = None) -> Path:
    import tensorrt as trt

    gpu = torch.cuda.get_device_name().replace(" ", "_")
    return (root or cache.engines_dir()) / f"{name}-{fingerprint}-{gpu}-trt{trt.__version__}.plan"


def build_engine(onnx_path: Path, out: Path, shapes: dict[str, tuple[tuple, tuple, tuple]], fp16: bool = True) -> Path:
    """``shapes``: input name -> (min, opt, max) shapes for the optimisation profile."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        raise RuntimeError("; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)))
    config = builder.create_builder_config()
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    cache_file = out.parent / "timing.cache"
    cache = config.create_timing_cache(cache_file.read_bytes() if cache_file.exists() else b"")
    config.set_timing_cache(cache, ignore_mismatch=True)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT could not build {onnx_path}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(bytes(plan))
    cache_file.write_bytes(bytes(config.get_timing_cache().serialize()))
    return out


class TrtRunner:
    """One engine; inputs and outputs are CUDA tensors, run on the current torch stream."""

    def __init__(self, plan: Path):
        import tensorrt as trt

        self.trt = trt
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan.read_bytes())
        self.ctx = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]

    def __call__(self, **feed: torch.Tensor) -> torch.Tensor:
        for n in self.inputs:
            t = feed[n].contiguous()
            feed[n] = t
            self.ctx.set_input_shape(n, tuple(t.shape))
            self.ctx.set_tensor_address(n, t.data_ptr())
        out = {}
        for n in self.outputs:
            shape = tuple(self.ctx.get_tensor_shape(n))
            out[n] = torch.empty(shape, device="cuda", dtype=torch.float32)
            self.ctx.set_tensor_address(n, out[n].data_ptr())
        self.ctx.execute_async_v3(torch.cuda.current_stream().cuda_stream)
        return out[self.outputs[0]]


class TrtBackend:
    name = "tensorrt"

    def __init__(self, model: DIFPModel, max_batch: int = 32, root: Path | None = None):
        if not torch.cuda.is_available():
            raise RuntimeError("TensorRT needs a CUDA GPU")
        fp = model.fingerprint()
        root = root or cache.engines_dir()
        onnx_dir = cache.onnx_dir(model)
        c = model.cfg
        lat = (c.latent_channels, c.latent_size, c.latent_size)
        img = (3, c.resolution, c.resolution)
        n_tok = c.context_tokens
        specs = {
            "unet": {"z": lat, "t": (), "ctx": (n_tok, c.token_dim)},
            "vae_encoder": {"x": img},
            "vae_decoder": {"z": lat},
        }
        if model.fast_dec is not None:
            specs["fast_decoder"] = {"z": lat}
        self.run = {}
        for name, inputs in specs.items():
            plan = engine_path(name, fp, root)
            if not plan.exists():
                shapes = {k: ((1, *s), (4, *s), (max_batch, *s)) for k, s in inputs.items()}
                build_engine(onnx_dir / f"{name}.onnx", plan, shapes)
            self.run[name] = TrtRunner(plan)
        self.resolution = c.resolution

    def eps(self, z: torch.Tensor, t, ctx: torch.Tensor) -> torch.Tensor:
        tt = torch.full((z.shape[0],), int(t), device="cuda", dtype=torch.int64)
        return self.run["unet"](z=z.float().cuda(), t=tt, ctx=ctx.float().cuda()).to(z.device)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.run["vae_encoder"](x=x.float().cuda()).to(x.device)

    def decode(self, z: torch.Tensor, size: int | None = None, graph: str = "vae_decoder") -> torch.Tensor:
        check_size(self.resolution, size)
        return self.run[graph](z=z.float().cuda()).to(z.device)

    def decode_protected(self, z: torch.Tensor, size: int | None = None) -> torch.Tensor:
        return self.decode(z, size, "fast_decoder" if "fast_decoder" in self.run else "vae_decoder")
