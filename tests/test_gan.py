"""The pretrained face generator (MobileStyleGAN) ported to PyTorch: same pictures as OpenVINO, W+, early exits."""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from difp_stream.gan.ir import read_ir
from difp_stream.gan.mobilestylegan import load_generator
from difp_stream.metrics import psnr

EXIT_PSNR = 25.0  # early-exit heads against the full render averaged down (measured: see README)


def _psnr(a, b) -> float:  # pictures in [-1, 1]: peak-to-peak 2
    return psnr(a, b, peak=2.0)


@pytest.fixture(scope="module")
def gen():
    return load_generator()


@pytest.fixture(scope="module")
def styles(gen):
    z = torch.randn(2, 512, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return gen.mapping(z)


def _wheel() -> Path | None:
    """The random-face wheel, where .ci/run (or a developer) downloaded it: $DIFP_RANDOM_FACE_WHEEL."""
    p = os.environ.get("DIFP_RANDOM_FACE_WHEEL")
    return Path(p) if p and Path(p).is_file() else None


@pytest.mark.skipif(_wheel() is None, reason="random-face wheel not downloaded (DIFP_RANDOM_FACE_WHEEL)")
def test_port_matches_openvino(tmp_path, gen, styles):
    ov = pytest.importorskip("openvino")
    with zipfile.ZipFile(_wheel()) as z:
        for stem in ("MappingNetwork", "SynthesisNetwork"):
            for ext in ("xml", "bin"):
                z.extract(f"random_face/data/{stem}.{ext}", tmp_path)
    d = tmp_path / "random_face" / "data"
    core = ov.Core()
    cfg = {"INFERENCE_PRECISION_HINT": "f32"}
    mapping = core.compile_model(core.read_model(d / "MappingNetwork.xml"), "CPU", cfg)
    synthesis = core.compile_model(core.read_model(d / "SynthesisNetwork.xml"), "CPU", cfg)
    z = torch.randn(1, 512, generator=torch.Generator().manual_seed(5))
    w_ov = mapping(z.numpy())[0]
    with torch.no_grad():
        w = gen.mapping(z).numpy()
        img = gen.synthesis(torch.from_numpy(w_ov)).numpy()
    assert np.abs(w - w_ov).max() < 1e-2
    assert _psnr(img, synthesis(w_ov)[0]) >= 40
    assert len(read_ir(d / "SynthesisNetwork.xml", d / "SynthesisNetwork.bin")[0]) == 940


def test_w_plus_with_equal_layers_is_the_single_style_render(gen, styles):
    assert gen.n_layers == 23 and gen.layer_channels[0] == 512 and gen.layer_channels[-1] == 64
    with torch.no_grad():
        plus = styles[:1, None].expand(1, gen.n_layers, 512).contiguous()
        a, b = gen.synthesis(plus, 128), gen.synthesis(styles[:1], 128)
        assert torch.equal(a, b)
        other = plus.clone()
        other[:, 12:] = styles[1:2, None]  # fine layers from another face: a different picture
        assert _psnr(gen.synthesis(other, 128), b) < 30


@pytest.mark.slow
def test_early_exits_are_the_downscaled_full_render(gen, styles):
    """512 is the last wavelet stage's low band (the inverse step skipped): 40 dB against the 1024 render averaged
    2x2 (measured: 85 dB). 256 and 128 are early exits: trained heads on the 256² / 128² features, checked against
    the 512 picture averaged down (``early=False``): PSNR >= EXIT_PSNR dB each (see README, "Face generator")."""
    with torch.no_grad():
        full = gen.synthesis(styles[:1], 1024)
        assert full.shape == (1, 3, 1024, 1024) and -1.6 < float(full.min()) < float(full.max()) < 1.6
        assert _psnr(gen.synthesis(styles[:1], 512), F.avg_pool2d(full, 2)) >= 40
        for size in (256, 128):
            assert str(size) in gen.heads, f"no early-exit head for {size} px shipped"
            exact = gen.synthesis(styles, size, early=False)
            assert _psnr(exact[:1], F.avg_pool2d(full, 1024 // size)) >= 40
            early = gen.synthesis(styles, size)
            assert early.shape == (2, 3, size, size)
            for i in range(2):
                assert _psnr(early[i], exact[i]) >= EXIT_PSNR, size


def test_bad_inputs_are_refused_clearly(gen, tmp_path):
    with pytest.raises(ValueError, match=r"\[B, 512\]"):
        gen.mapping(torch.zeros(1, 511))
    with pytest.raises(ValueError, match="styles must be"):
        gen.synthesis(torch.zeros(1, 5, 512))
    with pytest.raises(ValueError, match="size must be one of"):
        gen.synthesis(torch.zeros(1, 512), 300)
    xml = tmp_path / "g.xml"
    xml.write_text('<net name="g" version="10"><layers>'
                   '<layer id="0" name="x" type="Parameter"><data shape="1" element_type="f32"/>'
                   '<output><port id="0"><dim>1</dim></port></output></layer>'
                   '<layer id="1" name="y" type="Erf"><input><port id="0"/></input>'
                   '<output><port id="1"><dim>1</dim></port></output></layer>'
                   '<layer id="2" name="r" type="Result"><input><port id="0"/></input></layer></layers>'
                   '<edges><edge from-layer="0" from-port="0" to-layer="1" to-port="0"/>'
                   '<edge from-layer="1" from-port="1" to-layer="2" to-port="0"/></edges></net>')
    (tmp_path / "g.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="Erf"):
        read_ir(xml, tmp_path / "g.bin")


@pytest.mark.parametrize("kind", ["onnxruntime", "openvino"])
def test_backends_render_the_same_early_exit(gen, styles, kind, tmp_path, monkeypatch):
    """The 128 px early exit exported to ONNX and run by ONNX Runtime / OpenVINO gives PyTorch's picture."""
    pytest.importorskip(kind)
    from difp_stream.runtime.generator import renderer

    monkeypatch.setenv("DIFP_STREAM_CACHE", str(tmp_path))
    plus = styles[:1, None].expand(1, gen.n_layers, 512).contiguous().numpy()
    with torch.no_grad():
        ref = gen.synthesis(torch.from_numpy(plus), 128).numpy()
    got = renderer(gen, 128, kind, threads=1)(plus)
    assert got.shape == (1, 3, 128, 128) and _psnr(got, ref) >= 40


@pytest.mark.slow
def test_fp16_renders_as_fp32(gen, styles):
    """The half-precision path (what a CUDA GPU runs), checked on the CPU: the 128 px early exit within 40 dB."""
    import copy

    half = copy.deepcopy(gen).half()
    with torch.no_grad():
        ref = gen.synthesis(styles[:1], 128)
        got = half.synthesis(styles[:1].half(), 128)
    assert got.dtype == torch.float16 and _psnr(got.float(), ref) >= 40
