"""Shared helpers for the benchmarks (metrics, shared-data paths)."""
from __future__ import annotations

from pathlib import Path


from difp_stream.app.benchmark import machine  # noqa: F401  (shared with `difp-stream bench`)
from difp_stream.metrics import faces_leaked, psnr, ssim  # noqa: F401  (one set of metrics for package, bench, tests)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results"
