import numpy as np
import pytest

from difp_stream.difp import Protector, SamplingConfig
from difp_stream.runtime import OrtBackend, available, select
from difp_stream.runtime.onnx_export import export
from difp_stream.metrics import psnr as _psnr




@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory, tiny_model):
    d = tmp_path_factory.mktemp("onnx")
    report = export(tiny_model, d, log=lambda m: None)
    assert set(report["max_abs_error"]) == {"unet", "vae_encoder", "vae_decoder", "style_encoder", "identity_projector"}
    assert max(report["max_abs_error"].values()) < 1e-3
    assert (d / "detector.onnx").stat().st_size > 1_000_000
    return d


def test_onnxruntime_matches_pytorch(onnx_dir, tiny_model, crops, id_codes):
    ort_p = Protector(tiny_model, SamplingConfig(), device="cpu", backend=OrtBackend(tiny_model, onnx_dir))
    pt_p = Protector(tiny_model, SamplingConfig(), device="cpu")
    a = pt_p.protect(crops, seeds=4, id_codes=id_codes)
    b = ort_p.protect(crops, seeds=4, id_codes=id_codes)
    assert _psnr(a.crops, b.crops) >= 40
    assert _psnr(pt_p.recover(a.keys), ort_p.recover(b.keys)) >= 40


def test_select_falls_back_with_a_reason(tiny_model):
    msgs = []
    backend, name = select("tensorrt", tiny_model, "cpu", log=msgs.append)
    if available()["tensorrt"] is not None:
        assert backend is None and name == "torch" and "tensorrt unavailable" in msgs[0]
    assert select("torch", tiny_model, "cpu")[1] == "torch"


@pytest.mark.skipif(available()["tensorrt"] is not None, reason="TensorRT and a CUDA GPU are not both present")
def test_tensorrt_matches_pytorch(tiny_model, crops, id_codes, tmp_path):
    from difp_stream.runtime.tensorrt import TrtBackend

    model = tiny_model.to("cuda")
    trt_p = Protector(model, device="cuda", backend=TrtBackend(model, root=tmp_path))
    pt_p = Protector(model, device="cuda")
    assert _psnr(pt_p.protect(crops, seeds=4, id_codes=id_codes).crops,
                 trt_p.protect(crops, seeds=4, id_codes=id_codes).crops) >= 35


def test_half_precision_backend_matches_fp32_without_a_gpu(tiny_model, crops, id_codes):
    """The torch-cuda backend's code in its eager form (fp16 on CPU): dtype handling, scale, interface."""
    import torch

    from difp_stream.runtime.cuda_graphs import CudaGraphBackend

    half = Protector(tiny_model, SamplingConfig(), device="cpu",
                     backend=CudaGraphBackend(tiny_model, torch.float16, device="cpu", graphs=False))
    full = Protector(tiny_model, SamplingConfig(), device="cpu")
    a, b = full.protect(crops, seeds=4, id_codes=id_codes), half.protect(crops, seeds=4, id_codes=id_codes)
    assert b.crops.shape == a.crops.shape and b.crops.dtype == np.uint8
    assert _psnr(a.crops, b.crops) >= 25  # fp16 rounding, amplified by the guidance scale


@pytest.mark.skipif(available()["torch-cuda"] is not None, reason="no CUDA GPU")
def test_cuda_graphs_match_pytorch(tiny_model, crops, id_codes):
    from difp_stream.runtime.cuda_graphs import CudaGraphBackend

    model = tiny_model.to("cuda")
    backend = CudaGraphBackend(model)
    fast, ref = Protector(model, device="cuda", backend=backend), Protector(model, device="cuda")
    a = ref.protect(crops, seeds=4, id_codes=id_codes)
    for _ in range(2):  # the second call replays the captured graphs
        b = fast.protect(crops, seeds=4, id_codes=id_codes)
        assert _psnr(a.crops, b.crops) >= 35
    assert {k[0] for k in backend._graphs} == {"unet", "vae_encoder", "vae_decoder"}
    assert _psnr(ref.recover(a.keys), fast.recover(b.keys)) >= 35
