import pytest
import torch
import torch.nn.functional as F

from difp_stream.difp import DIFPModel, Protector
from difp_stream.difp.guidance import dual_guidance
from difp_stream.runtime import OrtBackend
from difp_stream.runtime.onnx_export import export
from difp_stream.train.distill import DistillConfig, Distiller, load_records, make_student
from difp_stream.metrics import psnr as _psnr
from tests.test_train import _faces

pytestmark = pytest.mark.train




@pytest.fixture(scope="module")
def teacher(tiny_model):
    """The tiny random model with a non-zero U-Net output layer (diffusers starts it at zero: eps would be 0)."""
    import copy

    m = copy.deepcopy(tiny_model)
    torch.manual_seed(1)
    torch.nn.init.normal_(m.unet.conv_out.weight, std=0.05)
    m.cfg.sampling = {"inversion_steps": 2}  # like the shipped models: the key branch rides along every other step
    return m


@pytest.fixture(scope="module")
def distilled(tmp_path_factory, teacher):
    out = tmp_path_factory.mktemp("distill")
    dcfg = DistillConfig(unet_channels=(16, 32), unet_attn_levels=(False, True), decoder_channels=(16, 16), crops=16,
                         record_batch=8, unet_steps=30, decoder_steps=10, batch=16, lr=2e-3)
    torch.manual_seed(0)
    student = Distiller(teacher, _faces(16, 32), out, dcfg, log=lambda m: None).run()
    return out, student


def test_records_hold_the_teachers_guided_and_conditional_eps(distilled, teacher):
    out, _ = distilled
    r = load_records(out)
    steps = teacher.cfg.sampling_config().steps
    # per face: 2 inversion calls + 2 key-branch calls (conditional), `steps` guided ones
    assert len(r["z"]) == 16 * (4 + steps) and int((r["mode"] == 1).sum()) == 16 * steps
    assert r["dec_z"].shape[0] == r["dec_x"].shape[0] == 32  # originals and protected renderings
    # a guided record is the dual guidance of the teacher's three branches at that state
    s, m = teacher.cfg.sampling_config(), teacher
    i = int(torch.nonzero(r["mode"] == 1)[5])
    z, t, tok = r["z"][i:i + 1].float(), int(r["t"][i]), r["tok"][i:i + 1].float()
    k = m.cfg.id_tokens
    with torch.no_grad():
        e = [m.eps(z, t, m.context(a, b, 1)) for a, b in ((None, None), (tok[:, :k], None), (None, tok[:, k:]))]
    want = dual_guidance(*e, s.s_id, s.s_sty)
    assert torch.allclose(want, r["target"][i:i + 1].float(), atol=2e-2)


def test_student_learns_the_teacher_and_protects_in_one_branch(distilled, teacher, crops, id_codes):
    out, student = distilled
    loaded = DIFPModel.load(out / "model")
    assert loaded.cfg.distilled["s_id"] == teacher.cfg.sampling_config().s_id
    assert loaded.fast_dec is not None and loaded.cfg.context_tokens == teacher.cfg.context_tokens + 1
    # the distillation lowered the student's error on the recorded teacher eps
    r = load_records(out)
    untrained = make_student(teacher, DistillConfig(unet_channels=(16, 32), unet_attn_levels=(False, True),
                                                       decoder_channels=(16, 16)))

    def err(mdl):
        with torch.no_grad():
            ctx = torch.cat([r["tok"].float(), mdl.mode_tokens[r["mode"].long()]], 1)
            return F.mse_loss(mdl.unet(r["z"].float(), r["t"].long(), encoder_hidden_states=ctx).sample,
                              r["target"].float()).item()

    assert err(loaded) < 0.7 * err(untrained)
    # protection: one guided branch per step; keys recover through the VAE decoder (shared with the teacher)
    calls = []
    p = Protector(loaded, loaded.cfg.sampling_config(), device="cpu")
    eps = loaded.eps
    loaded.eps = lambda z, t, ctx: calls.append(len(z)) or eps(z, t, ctx)
    res = p.protect(crops, seeds=1, id_codes=id_codes)
    del loaded.eps
    n = len(crops)
    assert calls == [n, n, 2 * n, n, 2 * n, n]  # 2 inversion steps, then [guided | key branch at the key's levels]
    assert res.crops.shape == crops.shape and len(res.keys) == n
    assert torch.equal(loaded.vae.decoder.conv_out.weight, teacher.vae.decoder.conv_out.weight.half().float())  # fp16 weights
    rec = p.recover(res.keys)
    ref = Protector(teacher, device="cpu").protect(crops, seeds=1, id_codes=id_codes)
    # the key's correction aims at the same latent: recovery matches the teacher's within fp16 key storage
    assert _psnr(rec, Protector(teacher, device="cpu").recover(ref.keys)) > 35


def test_distilled_model_refuses_other_sampling_settings(distilled):
    _, student = distilled
    with pytest.raises(ValueError, match="distilled for fixed sampling settings.*s_id"):
        Protector(student, student.cfg.sampling_config(s_id=2.0), device="cpu")
    with pytest.raises(ValueError, match="only a distilled model"):
        DIFPModel(student.cfg.__class__()).context(None, None, 1, guided=True)


def test_fast_model_exports_and_onnxruntime_matches(distilled, crops, id_codes, tmp_path):
    out, _ = distilled
    m = DIFPModel.load(out / "model")
    report = export(m, tmp_path, log=lambda msg: None)
    assert "fast_decoder" in report["max_abs_error"] and max(report["max_abs_error"].values()) < 1e-3
    s = m.cfg.sampling_config()
    a = Protector(m, s, device="cpu").protect(crops, seeds=3, id_codes=id_codes)
    b = Protector(m, s, device="cpu", backend=OrtBackend(m, tmp_path)).protect(crops, seeds=3, id_codes=id_codes)
    assert _psnr(a.crops, b.crops) >= 40
