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
    """(leaks, checked): face-frames of the output still matched (dlib L2 < 0.6) to an original face of the same
    frame, and how many original faces were checked."""
    from difp_stream.difp.identity import DlibIdentityEncoder
    from difp_stream.faces import align
    from difp_stream.faces.detect import Detector

    det, enc = Detector(threshold=0.5), DlibIdentityEncoder()
    leaks = checked = 0
    for a, b in list(zip(original_frames, protected_frames))[::every]:
        orig = det.detect([a])[0]
        checked += len(orig)
        prot = det.detect([b])[0]
        if not orig or not prot:
            continue
        ea = enc(np.stack([align.crop(a, align.similarity(f.landmarks, 128), 128) for f in orig]))
        eb = enc(np.stack([align.crop(b, align.similarity(f.landmarks, 128), 128) for f in prot]))
        d = np.linalg.norm(ea[:, None] - eb[None], axis=2)
        leaks += int((d < 0.6).any(axis=1).sum())
    return leaks, checked
