"""The auditor's round trip as a benchmark: protect with keys, `recover`, and compare the recovered face regions
with the original frames (PSNR, SSIM, re-identification, key size)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..difp import load_model
from ..difp.identity import DlibIdentityEncoder
from ..faces import align
from ..faces.align import face_mask, mask_roi, roi_of, template
from ..gan.encoder import ffhq_transform
from ..keys import KeyReader, load_secret
from ..metrics import psnr, ssim
from .benchmark import read_frames


FACE = (16, 112)  # the face part of the 128 template


def face_box(transform: np.ndarray, res: int, shape: tuple[int, int], framing: str = "template"):
    """The face region in frame coordinates (the transform maps the frame to the model's crop): the template's
    face square, or for the FFHQ framing the box of the face mask's core (where the paste replaces the face)."""
    if framing == "ffhq":
        return mask_roi(transform, face_mask(res) > 0.5, shape, pad=0)
    s = res / 128.0
    m = transform.astype(np.float64).copy()
    m[:, 2] -= FACE[0] * s  # shift so that the face square starts at 0 ...
    return roi_of(m.astype(np.float32), int(round((FACE[1] - FACE[0]) * s)), shape, pad=0)  # ... and has that size


def template_transform(transform: np.ndarray, res: int, framing: str) -> np.ndarray:
    """A key record's transform (frame -> the model's crop) as the frame -> 128 px template transform that the
    identity encoder reads (for the FFHQ framing: through where the FFHQ crop puts the template's own points)."""
    m = np.vstack([transform * (128.0 / res), [0, 0, 1]]).astype(np.float64)
    if framing == "ffhq":
        f0 = np.vstack([ffhq_transform(template(128), 128), [0, 0, 1]])  # template crop -> FFHQ crop
        m = np.linalg.inv(f0) @ m
    return m[:2].astype(np.float32)


MODES = {  # label: protect options
    "diffusion": ["--recovery", "diffusion"],
    "diffusion, 64 px keys": ["--recovery", "diffusion", "--key-resolution", "64"],
    "diffusion, 128 px keys": ["--recovery", "diffusion", "--key-resolution", "128"],
    "diffusion, 256 px keys": ["--recovery", "diffusion", "--key-resolution", "256"],
    "diffusion, 512 px keys": ["--recovery", "diffusion", "--key-resolution", "512"],
    "faithful (default)": ["--recovery", "faithful"],
    "faithful 90 (quality 90)": ["--recovery", "faithful", "--faithful-quality", "90"],
    "exact": ["--recovery", "exact"],
}


def round_trip(clip: Path, work: Path, mode: str, secret: Path, pub: Path, cli, model: str | None = None) -> dict:
    """The auditor's view: protect ``clip`` with keys sealed to ``pub`` (``MODES[mode]``), `recover` with
    ``secret`` (both through ``cli``, the command line's ``main``), and compare each key record's face region of
    the recovered video with the original decoded frame."""
    out, rec = work / "out.mp4", work / "rec.mp4"
    keys = Path(str(out) + ".difpkeys")
    with_model = ["--model", str(model)] if model else []
    assert cli([str(clip), str(out), "--recipient", str(pub), *MODES[mode], *with_model, "--seed", "1",
                "--no-progress", "--overwrite"]) == 0
    assert cli(["recover", str(out), str(rec), "--keys", str(keys), "--identity", str(secret), *with_model,
                "--no-progress", "--overwrite"]) == 0
    (orig, fps), prot, back = read_frames(clip), read_frames(out)[0], read_frames(rec)[0]
    m = load_model(model)
    res, framing = m.cfg.resolution, m.framing
    ident = DlibIdentityEncoder()
    p_rec, s_rec, p_prot, same = [], [], [], []
    for r in KeyReader(keys, load_secret(secret)).records():
        box = face_box(r.transform, res, orig[r.frame_index].shape[:2], framing)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        if min(x1 - x0, y1 - y0) < 8:
            continue
        o, b, pr = (f[r.frame_index][y0:y1, x0:x1] for f in (orig, back, prot))
        p_rec.append(psnr(o, b))
        s_rec.append(ssim(o, b))
        p_prot.append(psnr(o, pr))
        m128 = template_transform(r.transform, res, framing)
        a, b = ident(np.stack([align.crop(f[r.frame_index], m128, 128) for f in (orig, back)]))
        same.append(float(np.linalg.norm(a - b)) < 0.6)
    return {"reidentified": float(np.mean(same)) if same else 0.0, "faces": len(p_rec),
            "recovered_psnr_db": float(np.mean(p_rec)), "recovered_ssim": float(np.mean(s_rec)),
            "protected_psnr_db": float(np.mean(p_prot)), "frames": len(orig),
            "key_kb_per_face_second": keys.stat().st_size / 1024 / max(len(p_rec) / fps, 1e-9),
            "key_over_output": keys.stat().st_size / out.stat().st_size}
