"""Convert MobileStyleGAN from the ``random-face`` wheel (OpenVINO IR) into the project's weights format, once.

    pip download --no-deps random-face==2021.7.21.1 -d /tmp/rf
    python export/convert_mobilestylegan.py /tmp/rf/random_face-2021.7.21.1-py3-none-any.whl

Writes ``difp_stream/weights/mobilestylegan/{mapping,synthesis}.{json,safetensors}`` (constants in fp16) and checks
the result against the IR run by PyTorch in fp32 (and by OpenVINO, when installed). The wheel's own Python code and
its dependencies are not used.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from difp_stream.gan.ir import IRGraph, read_ir  # noqa: E402
from difp_stream.gan.mobilestylegan import WEIGHTS, load_generator, save_graph  # noqa: E402


def ir_folder(source: Path) -> Path:
    """The folder holding MappingNetwork.xml/.bin and SynthesisNetwork.xml/.bin (unpacked from the wheel)."""
    if source.is_dir():
        return source
    out = Path(tempfile.mkdtemp(prefix="random-face-"))
    with zipfile.ZipFile(source) as z:
        for name in z.namelist():
            if name.startswith("random_face/data/") and name.endswith((".xml", ".bin")):
                z.extract(name, out)
    return out / "random_face" / "data"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(4.0 / max(np.mean((a - b) ** 2), 1e-12)))  # images in [-1, 1]: peak-to-peak 2


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("source", help="the random-face wheel, or a folder with its IR files")
    p.add_argument("--out", default=str(WEIGHTS), help=f"where to write (default: {WEIGHTS})")
    args = p.parse_args()
    d = ir_folder(Path(args.source))
    graphs = {}
    for name, stem in (("mapping", "MappingNetwork"), ("synthesis", "SynthesisNetwork")):
        nodes, consts = read_ir(d / f"{stem}.xml", d / f"{stem}.bin")
        graphs[name] = IRGraph(nodes, consts).eval()
        save_graph(graphs[name], consts, Path(args.out), name)
    load_generator.cache_clear()
    g = load_generator(args.out)
    z = torch.randn(2, 512, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        w_ref = next(iter(graphs["mapping"]({"var": z}).values()))
        ref = next(iter(graphs["synthesis"]({"style": w_ref}).values())).numpy()
        got = g.synthesis(g.mapping(z)).numpy()
    print(f"converted (fp16 constants) vs the IR in fp32: {psnr(got, ref):.1f} dB")
    try:
        import openvino as ov

        core = ov.Core()
        net = core.compile_model(core.read_model(d / "SynthesisNetwork.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        ovimg = np.concatenate([net(w_ref[i:i + 1].numpy())[0] for i in range(len(w_ref))])
        print(f"converted vs OpenVINO (fp32): {psnr(got, ovimg):.1f} dB")
    except ImportError:
        print("openvino not installed: no OpenVINO comparison")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
