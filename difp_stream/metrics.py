"""Measurements shared by the package, the benchmarks and the tests: PSNR, SSIM, identity leaks (dlib), how
constant a track's fake person stays, and the realism bands (the detail a face has and a blob lacks)."""
from __future__ import annotations

import numpy as np

from .faces import align
from .faces.align import band_energy  # noqa: F401  (measured here, used by the paste too)
from .difp.identity import DlibIdentityEncoder
from .faces.detect import Detector
from .faces.track import iou_matrix

LEAK_L2 = 0.6  # dlib L2 below which two faces are the same person


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float(10 * np.log10(peak**2 / max(mse, 1e-12)))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two uint8 RGB pictures (scikit-image)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, channel_axis=-1, data_range=255))


def band_ratios(original: np.ndarray, output: np.ndarray) -> tuple[float, float]:
    """Output / original mid- and high-band energy of the same face box (realism: a blob ~0.05, a face ~1)."""
    (mo, ho), (mp, hp) = band_energy(original), band_energy(output)
    return mp / max(mo, 1e-9), hp / max(ho, 1e-9)


class Faces:
    def __init__(self):
        self.det, self.enc = Detector(threshold=0.5, max_side=1280), DlibIdentityEncoder()

    def descriptor(self, img: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        return self.enc(align.crop(img, align.similarity(landmarks, 128), 128)[None])[0]


def faces_leaked(original_frames, protected_frames, every: int = 1, faces: Faces | None = None) -> tuple[int, int]:
    """(leaks, checked): original faces whose place in the output still holds a face matched to them (dlib
    L2 < 0.6), and how many original faces were checked. Each original face is compared with the output face found
    at the same place (IoU > 0.3); none found there means the face is covered."""
    fc = faces or Faces()
    leaks = checked = 0
    for a, b in list(zip(original_frames, protected_frames))[::every]:
        orig = fc.det.detect([a])[0]
        checked += len(orig)
        prot = fc.det.detect([b])[0]
        if not orig or not prot:
            continue
        iou = iou_matrix(np.stack([f.box for f in orig]), np.stack([f.box for f in prot]))
        for i, f in enumerate(orig):
            j = int(iou[i].argmax())
            if iou[i, j] > 0.3:
                d = np.linalg.norm(fc.descriptor(a, f.landmarks) - fc.descriptor(b, prot[j].landmarks))
                leaks += int(d < LEAK_L2)
    return leaks, checked


def identity_stability(outs: list, faces_per_frame: list, every: int, faces: Faces) -> dict:
    """How constant each track's fake person is: dlib descriptors of its output face on every ``every``-th frame,
    compared with the track's first one (share within 0.6 = "the same fake person") and with the track's mean."""
    by_track: dict[int, list[np.ndarray]] = {}
    for i in range(0, len(outs), every):
        for tid, _box, lms in faces_per_frame[i]:
            by_track.setdefault(tid, []).append(faces.descriptor(outs[i], lms))
    same, spread = [], []
    for ds in by_track.values():
        if len(ds) < 2:
            continue
        d = np.stack(ds)
        same += list(np.linalg.norm(d[1:] - d[0], axis=1) < LEAK_L2)
        spread += list(np.linalg.norm(d - d.mean(0), axis=1))
    return {"tracks_checked": sum(len(v) >= 2 for v in by_track.values()),
            "same_fake_share": float(np.mean(same)) if same else None,
            "mean_l2_to_track_mean": float(np.mean(spread)) if spread else None}


def flicker(frames: list, outs: list, faces_per_frame: list) -> dict:
    """Temporal flicker of the faces: mean absolute difference (0-255) between a track's face in two consecutive
    frames, both cut with the later frame's alignment (128 px template), for the output and for the original; the
    ratio output / original is what the README's goal (<= 1.5) reads."""

    prev: dict[int, int] = {}
    out_d, orig_d = [], []
    for i, faces in enumerate(faces_per_frame):
        seen = {}
        for tid, _box, lms in faces:
            seen[tid] = i
            if prev.get(tid) != i - 1:
                continue
            try:
                m = align.similarity(lms, 128)
            except ValueError:
                continue
            for d, src in ((out_d, outs), (orig_d, frames)):
                a, b = (align.crop(src[j], m, 128).astype(np.float32) for j in (i - 1, i))
                d.append(float(np.abs(a - b).mean()))
        prev = seen
    if not out_d:
        return {"pairs": 0, "output_mad": None, "original_mad": None, "ratio": None}
    o, r = float(np.mean(out_d)), float(np.mean(orig_d))
    return {"pairs": len(out_d), "output_mad": o, "original_mad": r, "ratio": o / max(r, 1e-6)}
