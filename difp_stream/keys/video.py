"""Faithful face regions of a video, coded as video: per track and group of frames, the original pixels of the face
regions (each at the top left of one canvas, the rest edge-padded) as an H.264 4:4:4 stream (PyAV / x264). A JPEG
per face-frame weighed ~4x the protected video; one stream per track's group weighs a fraction of it at the same
PSNR (``bench/recovery.py``). A chunk is decoded on first use, whole (its frames are held until the next chunk of the
track), so a reader that only counts records never decodes."""
from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import av
import numpy as np

from ..metrics import psnr
from .crypto import KeyError_

GROUP = 30  # frames per chunk: a key frame each, so recovery can start at any group
_CHUNK = struct.Struct("<HHH")  # regions, canvas width, canvas height
MAX_SIDE = 16384


CRFS = (27, 25, 23, 21, 19, 17, 15, 12, 9)  # tried in turn until the chunk reaches its PSNR


def target_db(quality: int) -> float:
    """``--faithful-quality`` Q (50-100, the JPEG scale of a still image's faithful key) as the PSNR a video
    chunk's regions must reach on average: 75 -> 39 dB, 90 -> 42 dB, 100 -> 44 dB, 50 -> 34 dB."""
    return 39.0 + (quality - 75) * 0.2


def _code(canvases: list[np.ndarray], crf: int) -> bytes:
    h, w = canvases[0].shape[:2]
    buf = io.BytesIO()
    with av.open(buf, "w", format="h264") as out:
        v = out.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = w, h, "yuv444p"  # (4:4:4: a face's colour edges stay)
        v.options = {"crf": str(crf), "preset": "medium", "tune": "psnr", "g": str(len(canvases)),
                     "threads": "1"}
        for c in canvases:
            out.mux(v.encode(av.VideoFrame.from_ndarray(c, format="rgb24")))
        out.mux(v.encode())
    return buf.getvalue()


def _decode(data: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(data), format="h264") as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def region_psnr(regions: list[np.ndarray], frames: list[np.ndarray]) -> float:
    """Mean PSNR of each region against the top left of its decoded frame."""
    return float(np.mean([psnr(r, f[:r.shape[0], :r.shape[1]]) for r, f in zip(regions, frames)]))


def encode_chunk(regions: list[np.ndarray], quality: int, start: int = 1) -> tuple[bytes, int]:
    """uint8 RGB regions (any sizes) -> (a chunk payload: count, canvas size, then the H.264 stream; the place in
    ``CRFS`` used): the largest rate factor whose regions reach ``target_db(quality)`` (measured by decoding it),
    searched from ``start`` (the track's last one: one or two tries where the picture changes slowly)."""
    h = max(r.shape[0] for r in regions)
    w = max(r.shape[1] for r in regions)
    h, w = h + h % 2, w + w % 2
    canvases = [np.ascontiguousarray(np.pad(r, ((0, h - r.shape[0]), (0, w - r.shape[1]), (0, 0)), mode="edge"))
                for r in regions]
    goal = target_db(quality)

    def reaches(i: int) -> bytes | None:
        data = _code(canvases, CRFS[i])
        return data if region_psnr(regions, _decode(data)) >= goal else None

    i = min(max(start, 0), len(CRFS) - 1)
    data = reaches(i)
    if data is not None:  # one step up (fewer bytes) while it still reaches the goal
        while i > 0 and (up := reaches(i - 1)) is not None:
            i, data = i - 1, up
    else:
        while data is None and i < len(CRFS) - 1:
            i += 1
            data = reaches(i)
        if data is None:
            data = _code(canvases, CRFS[i])
    return _CHUNK.pack(len(regions), w, h) + data, i


class VideoChunk:
    """One decrypted chunk; :meth:`frame` decodes the stream on first use."""

    def __init__(self, payload: bytes):
        if len(payload) < _CHUNK.size:
            raise KeyError_("face video chunk too short")
        self.count, self.width, self.height = _CHUNK.unpack_from(payload)
        if not (0 < self.count <= 4 * GROUP and 0 < self.width <= MAX_SIDE and 0 < self.height <= MAX_SIDE):
            raise KeyError_("face video chunk has an impossible size")
        self._data, self._frames = payload[_CHUNK.size:], None

    def frame(self, i: int) -> np.ndarray:
        if self._frames is None:
            try:
                frames = _decode(self._data)
            except av.FFmpegError as e:
                raise KeyError_(f"face video chunk cannot be decoded ({e})") from None
            if len(frames) != self.count or any(f.shape[:2] != (self.height, self.width) for f in frames):
                raise KeyError_("face video chunk does not hold what its header says")
            self._data, self._frames = b"", frames
        if not 0 <= i < self.count:
            raise KeyError_(f"face record points past its video chunk ({i} of {self.count})")
        return self._frames[i]


@dataclass
class InChunk:
    """Where a face record's region pixels are: frame ``index`` of its track's current video chunk (the chunk is
    attached when the file is read)."""

    index: int
    chunk: VideoChunk | None = None

    def pixels(self, box: tuple[int, int, int, int]) -> np.ndarray:
        if self.chunk is None:
            raise KeyError_("face record's video chunk is missing (the key file was altered)")
        x0, y0, x1, y1 = box
        f = self.chunk.frame(self.index)
        if y1 - y0 > f.shape[0] or x1 - x0 > f.shape[1]:
            raise KeyError_("face region is larger than its video chunk")
        return f[:y1 - y0, :x1 - x0].copy()
