"""Synthetic test clips (made, not shipped): a still face photo (scikit-image's astronaut) panned and zoomed, plus a
sine tone. Used by the tests and the benchmarks."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np


def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()  # 512x512 RGB, one face


def make_clip(path: Path, frames: int = 24, size: tuple[int, int] = (320, 240), fps: int = 12, audio: bool = True,
              rotation: int = 0, codec: str = "libx264", gop: int = 12, two: bool = False) -> Path:
    """A ``size`` (w, h) clip of the astronaut's face moving slowly, optional 440 Hz mono audio; ``two`` puts a
    second (mirrored) person beside her, so the clip has two tracks."""
    img = astronaut()
    if two:
        img = np.concatenate([img, img[:, ::-1]], 1)
    w, h = size
    out = av.open(str(path), "w")
    v = out.add_stream(codec, rate=fps)
    v.width, v.height, v.pix_fmt = w, h, "yuv420p"
    v.options = {"g": str(gop), "preset": "ultrafast"} if codec == "libx264" else {}
    if rotation:
        v.set_display_rotation(rotation)
    a = None
    if audio:
        a = out.add_stream("aac", rate=16000)
        a.layout = "mono"
    for i in range(frames):
        s = 1.0 + 0.15 * i / max(1, frames - 1)  # zoom in
        cx, cy = 250 + 20 * np.sin(i / 6), 170 + 10 * np.cos(i / 7)
        half = 150 / s
        crop = img[int(cy - half):int(cy + half), int(cx - half * w / h):int(cx + half * w / h)]
        if two:
            crop = img[int(cy - half):int(cy + half) + 100, 60:960]
        frame = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA)
        for p in v.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
            out.mux(p)
    for p in v.encode(None):
        out.mux(p)
    if a is not None:
        n = int(16000 * frames / fps)
        t = np.arange(n) / 16000
        tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for k in range(0, n, 1024):
            chunk = tone[k:k + 1024]
            fr = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
            fr.sample_rate = 16000
            fr.pts = k
            fr.time_base = Fraction(1, 16000)
            for p in a.encode(fr):
                out.mux(p)
        for p in a.encode(None):
            out.mux(p)
    out.close()
    return path
