"""Live sinks with PyAV: publish to an RTSP server (ANNOUNCE/RECORD), or write a file or time-named segments, each
under a hidden partial name until complete. Timestamps come from the frames' arrival times."""
from __future__ import annotations

import os
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..errors import OutputError, redact, redact_message
from ..staging import partial_path, refuse_existing
from .io import container_options


def _even(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    return img[: h - h % 2, : w - w % 2]


class _Encoder:
    """One H.264 output (file or RTSP) with millisecond timestamps taken from the frames' arrival times."""

    def __init__(self, target: str, fps: Fraction, size: tuple[int, int], fmt: str | None, options: dict,
                 crf: int, preset: str, metadata: dict | None = None):
        self.c = av.open(target, "w", format=fmt, options=options)
        w, h = size
        self.s = self.c.add_stream("libx264", rate=fps)
        self.s.width, self.s.height = w - w % 2, h - h % 2
        self.s.pix_fmt = "yuv420p"
        self.s.time_base = Fraction(1, 1000)
        self.s.codec_context.time_base = Fraction(1, 1000)  # millisecond timestamps reach the muxer unrounded
        gop = str(max(1, int(round(float(fps)))))
        self.s.options = {"crf": str(crf), "preset": preset, "tune": "zerolatency", "g": gop, "bf": "0"}
        self.c.metadata.update(metadata or {})
        self.t0, self.last, self.frames = None, -1, 0
        self.frame_ms = max(1, int(round(1000 / float(fps))))

    def _mux(self, packets) -> None:
        for p in packets:
            p.duration = p.duration or self.frame_ms  # else MP4 ends on a 0-length sample that players skip
            self.c.mux(p)

    def write(self, img: np.ndarray, t: float) -> None:
        self.t0 = t if self.t0 is None else self.t0
        pts = max(int(round((t - self.t0) * 1000)), self.last + 1)
        f = av.VideoFrame.from_ndarray(_even(img), format="rgb24")
        f.pts, f.time_base, self.last = pts, Fraction(1, 1000), pts
        self._mux(self.s.encode(f))
        self.frames += 1

    def close(self) -> None:
        try:
            self._mux(self.s.encode(None))
        finally:
            self.c.close()


class RtspSink:
    """Publish to an RTSP server (ANNOUNCE/RECORD). If the server goes away, frames are dropped (counted) and the
    connection is retried with backoff; the filter itself keeps running."""

    kind = "rtsp"

    def __init__(self, url: str, fps: Fraction, size: tuple[int, int], transport: str = "tcp", crf: int = 23,
                 preset: str = "ultrafast", log=print, retry_delay: float = 0.5, max_delay: float = 8.0):
        self.url, self.fps, self.size, self.transport, self.crf, self.preset = url, fps, size, transport, crf, preset
        self.log, self.retry_delay, self.max_delay = log, retry_delay, max_delay
        self.enc: _Encoder | None = None
        self.frames = self.dropped = self.connects = 0
        self._next_try, self._delay = 0.0, retry_delay

    def open(self) -> None:
        """First connection: a failure here is an error (a wrong URL should not run silently)."""
        try:
            self._connect()
        except (av.error.FFmpegError, OSError) as e:
            raise OutputError(f"cannot publish to {redact(self.url)}: {redact_message(e, self.url)}") from None

    def _connect(self) -> None:
        self.enc = _Encoder(self.url, self.fps, self.size, "rtsp", {"rtsp_transport": self.transport},
                            self.crf, self.preset)
        self.connects += 1
        self._delay = self.retry_delay

    def write(self, img: np.ndarray, t: float) -> None:
        if self.enc is None:
            if time.monotonic() < self._next_try:
                self.dropped += 1
                return
            try:
                self._connect()
                self.log(f"output {redact(self.url)}: reconnected")
            except (av.error.FFmpegError, OSError):
                self._next_try = time.monotonic() + self._delay
                self._delay = min(self._delay * 2, self.max_delay)
                self.dropped += 1
                return
        try:
            self.enc.write(img, t)
            self.frames += 1
        except (av.error.FFmpegError, OSError) as e:
            self.log(f"output {redact(self.url)}: {redact_message(e, self.url)}; reconnecting")
            self._drop_connection()
            self.dropped += 1
            self._next_try = time.monotonic() + self._delay

    def _drop_connection(self) -> None:
        enc, self.enc = self.enc, None
        try:
            enc.c.close()
        except Exception:  # noqa: BLE001 - the connection is gone already
            pass

    def close(self) -> None:
        if self.enc is not None:
            try:
                self.enc.close()
            except (av.error.FFmpegError, OSError):
                pass
            self.enc = None


class FileSink:
    """Write one file, or time-named segments when ``segment_seconds`` is set (the path is a strftime pattern such as
    ``out_%Y%m%d_%H%M%S.mp4``). Each file is written under a hidden partial name and renamed when complete.
    ``on_open(path) -> metadata`` and ``on_close(path)`` let the caller keep one key file per output file."""

    kind = "file"

    def __init__(self, pattern: str, fps: Fraction, size: tuple[int, int], segment_seconds: float = 0.0,
                 crf: int = 18, preset: str = "veryfast", overwrite: bool = False, on_open=None, on_close=None):
        self.pattern, self.fps, self.size, self.seconds = pattern, fps, size, segment_seconds
        self.crf, self.preset, self.overwrite = crf, preset, overwrite
        self.on_open, self.on_close = on_open, on_close
        self.enc: _Encoder | None = None
        self.path: Path | None = None
        self.started = 0.0
        self.files: list[Path] = []
        self.frames = 0

    @property
    def index(self) -> int:
        """Frame number the next frame gets inside the current file."""
        return self.enc.frames if self.enc is not None else 0

    def _name(self) -> Path:
        p = Path(time.strftime(self.pattern) if self.seconds else self.pattern)
        if p in self.files or (p.exists() and self.seconds):  # two segments within one second: number them
            k = 1
            while (q := p.with_name(f"{p.stem}_{k}{p.suffix}")).exists() or q in self.files:
                k += 1
            p = q
        return p

    def _open(self, t: float) -> None:
        path = self._name()
        refuse_existing(path, self.overwrite)
        meta = self.on_open(path) if self.on_open else {}
        opts = container_options(path)
        try:
            self.enc = _Encoder(str(partial_path(path)), self.fps, self.size, None, opts, self.crf, self.preset, meta)
        except (av.error.FFmpegError, OSError) as e:
            raise OutputError(f"cannot write {path}: {e}") from None
        self.path, self.started = path, t

    def before(self, t: float) -> None:
        """Call before each frame: opens the first file and rotates segments."""
        if self.enc is not None and self.seconds and t - self.started >= self.seconds:
            self._finish()
        if self.enc is None:
            self._open(t)

    def write(self, img: np.ndarray, t: float) -> None:
        self.before(t)
        self.enc.write(img, t)
        self.frames += 1

    def _finish(self) -> None:
        enc, path, self.enc = self.enc, self.path, None
        enc.close()
        tmp = partial_path(path)
        if enc.frames:
            os.replace(tmp, path)
            self.files.append(path)
        else:
            tmp.unlink(missing_ok=True)
        if self.on_close:
            self.on_close(path, enc.frames)

    def close(self) -> None:
        if self.enc is not None:
            self._finish()
