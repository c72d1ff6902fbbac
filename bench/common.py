"""Shared helpers for the benchmarks (metrics, shared-data paths)."""
from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, channel_axis=-1, data_range=255))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def faces_leaked(original_frames, protected_frames, every: int = 1) -> tuple[int, int]:
    """(leaks, checked): original faces whose place in the output still holds a face matched to them (dlib
    L2 < 0.6), and how many original faces were checked. Each original face is compared with the output face found
    at the same place (IoU > 0.3); none found there means the face is covered."""
    from difp_stream.difp.identity import DlibIdentityEncoder
    from difp_stream.faces import align
    from difp_stream.faces.detect import Detector
    from difp_stream.faces.track import iou_matrix

    det, enc = Detector(threshold=0.5, max_side=1280), DlibIdentityEncoder()
    leaks = checked = 0
    for a, b in list(zip(original_frames, protected_frames))[::every]:
        orig = det.detect([a])[0]
        checked += len(orig)
        prot = det.detect([b])[0]
        if not orig or not prot:
            continue
        iou = iou_matrix(np.stack([f.box for f in orig]), np.stack([f.box for f in prot]))
        for i, f in enumerate(orig):
            j = int(iou[i].argmax())
            if iou[i, j] <= 0.3:
                continue
            ea, eb = enc(np.stack([align.crop(x, align.similarity(g.landmarks, 128), 128)
                                   for x, g in ((a, f), (b, prot[j]))]))
            leaks += int(np.linalg.norm(ea - eb) < 0.6)
    return leaks, checked
