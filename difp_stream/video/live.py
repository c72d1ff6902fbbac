"""Live video with PyAV: a network source (RTSP, RTSPS, HTTP, SRT, ... anything FFmpeg opens) decoded in its own
thread into a bounded queue, with reconnect and backoff; sinks that publish to an RTSP server or write files
(one file, or time-named segments). The consumer never blocks the decoder: when the queue is full the oldest frame
is dropped (and counted) so the output stays close to real time."""
from __future__ import annotations

import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..errors import InputError, OutputError, redact
from ..files import partial_path
from .io import _rotate


def is_url(path: str) -> bool:
    return "://" in str(path)


def is_rtsp(url: str) -> bool:
    return str(url).lower().startswith(("rtsp://", "rtsps://"))


@dataclass
class SourceOptions:
    transport: str = "tcp"  # RTSP transport: tcp or udp
    timeout: float = 5.0  # seconds without data before the source counts as lost
    retries: int = 10  # consecutive failed connection attempts before giving up (-1: never give up)
    retry_delay: float = 0.5  # first wait between attempts; doubles up to max_delay
    max_delay: float = 8.0
    queue: int = 8  # frames buffered between the decoder and the filter
    realtime: bool = False  # pace a file source at its frame rate (a simulated camera)


def input_options(url: str, opts: SourceOptions) -> dict:
    """FFmpeg options for a fast start and a low delay."""
    o = {"flags": "low_delay", "probesize": "65536", "analyzeduration": "500000"}
    if is_url(url):
        o["fflags"] = "nobuffer"  # (on a file it loses the frames still in the decoder at the end)
    if is_rtsp(url):
        o["rtsp_transport"] = opts.transport
        o["timeout"] = str(int(opts.timeout * 1e6))  # RTSP socket timeout, microseconds
    return o


@dataclass
class LiveFrame:
    seq: int  # frame number since the start, dropped frames included
    image: np.ndarray  # RGB, display orientation
    arrival: float  # time.monotonic() when decoded


class LiveSource:
    """Decode ``url`` in a thread. ``get()`` returns the next frame, or None on timeout; ``done`` is set when the
    source gave up (``error`` then says why) or was stopped."""

    def __init__(self, url: str, opts: SourceOptions | None = None, log=print):
        self.url, self.opts, self.log = str(url), opts or SourceOptions(), log
        self.name = redact(self.url)  # for messages: a camera URL's credentials never reach a log
        self._q: deque[LiveFrame] = deque()
        self._cv = threading.Condition()
        self._stop = threading.Event()
        self.done = threading.Event()
        self.error: Exception | None = None
        self.fps: Fraction | None = None
        self.size: tuple[int, int] | None = None  # (width, height), display orientation
        self.connected = threading.Event()
        self.frames = 0  # decoded
        self.dropped = 0  # dropped from a full queue
        self.connects = 0  # successful connections
        self.corrupt = 0  # packets the decoder rejected (skipped up to the next keyframe)
        self.gaps: list[float] = []  # seconds without frames between a loss and the next frame
        self._thread = threading.Thread(target=self._run, name="difp-live-source", daemon=True)

    def start(self) -> "LiveSource":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)  # a thread still blocked in a connection attempt is a daemon: left behind

    def get(self, timeout: float = 0.5) -> LiveFrame | None:
        with self._cv:
            if not self._q:
                self._cv.wait(timeout)
            return self._q.popleft() if self._q else None

    def backlog(self) -> int:
        return len(self._q)

    def _push(self, f: LiveFrame) -> None:
        with self._cv:
            if len(self._q) >= self.opts.queue:
                self._q.popleft()
                self.dropped += 1
            self._q.append(f)
            self._cv.notify()

    def _open(self):
        return av.open(self.url, options=input_options(self.url, self.opts),
                       timeout=(self.opts.timeout + 5, None))  # reads: the RTSP socket timeout

    def _run(self) -> None:
        # a connection that opens but delivers no frame counts as a failed attempt: the same backoff, the same limit
        failures, lost_at, delay = 0, None, self.opts.retry_delay
        try:
            while not self._stop.is_set():
                try:
                    c = self._open()
                    if not c.streams.video:
                        c.close()
                        raise InputError(f"{self.name} has no video stream")
                except (av.error.FFmpegError, OSError, InputError) as e:
                    err = e
                else:
                    self.connects += 1
                    before = self.frames
                    try:
                        lost_at = self._read(c, lost_at)
                    finally:
                        c.close()
                    if not is_url(self.url) or self._stop.is_set():
                        return  # a file source ends at its end
                    if self.frames > before:
                        failures, delay = 0, self.opts.retry_delay
                        self.log(f"source {self.name} lost; reconnecting")
                        continue
                    err = InputError("the connection delivered no frame")
                failures += 1
                if 0 <= self.opts.retries < failures:
                    self.error = InputError(f"cannot open {self.name} after {failures} attempt(s): {_clean(err, self.url)}")
                    return
                self.log(f"source {self.name}: {_clean(err, self.url)}; retrying in {delay:.1f} s")
                self._stop.wait(delay)
                delay = min(delay * 2, self.opts.max_delay)
        finally:
            self.done.set()
            with self._cv:
                self._cv.notify_all()

    def _frames(self, c, v):
        """Decoded frames; ``None`` for a packet the decoder rejects (a damaged packet is skipped, not a lost
        connection: decoding resumes at the next keyframe)."""
        for packet in c.demux(v):
            try:
                yield from v.decode(packet)
            except av.error.InvalidDataError:
                self.corrupt += 1
                yield None

    def _read(self, c, lost_at: float | None) -> float:
        v = c.streams.video[0]
        v.thread_type = "AUTO"
        self.fps = self.fps or _stream_fps(v)
        t0, first_pts, synced = time.monotonic(), None, False
        try:
            for frame in self._frames(c, v):
                if self._stop.is_set():
                    break
                if frame is None:  # a damaged packet: what follows up to the next keyframe is smeared too
                    synced = False
                    continue
                synced = synced or frame.key_frame  # frames before a connection's first keyframe are smeared guesses
                if not synced or frame.is_corrupt:
                    continue
                img = _rotate(frame.to_ndarray(format="rgb24"), int(round(frame.rotation or 0)))
                now = time.monotonic()
                if lost_at is not None:
                    self.gaps.append(now - lost_at)
                    lost_at = None
                if self.opts.realtime and frame.time is not None:
                    first_pts = frame.time if first_pts is None else first_pts
                    wait = t0 + (frame.time - first_pts) - now
                    if wait > 0:
                        self._stop.wait(wait)
                        now = time.monotonic()
                if self.size is None:
                    self.size = (img.shape[1], img.shape[0])
                    self.connected.set()
                self._push(LiveFrame(self.frames, img, now))
                self.frames += 1
        except (av.error.FFmpegError, OSError) as e:
            self.log(f"source {self.name}: {_clean(e, self.url)}")
        return time.monotonic()


def _clean(e: Exception, url: str) -> str:
    """An error message with the URL's credentials taken out (FFmpeg quotes the URL it failed on)."""
    return str(e).replace(url, redact(url))


# ------------------------------------------------------------------------------------------------------------ sinks
def _even(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    return img[: h - h % 2, : w - w % 2]


def _stream_fps(v) -> Fraction:
    """The stream's frame rate; RTSP streams without timing info report their RTP clock (90000): ignored."""
    for rate in (v.average_rate, v.guessed_rate):
        if rate and 1 <= rate <= 240:
            return Fraction(rate)
    return Fraction(25)


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
            raise OutputError(f"cannot publish to {redact(self.url)}: {_clean(e, self.url)}") from None

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
            self.log(f"output {redact(self.url)}: {_clean(e, self.url)}; reconnecting")
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
        if path.exists() and not self.overwrite:
            raise OutputError(f"{path} exists (use --overwrite to replace it)")
        meta = self.on_open(path) if self.on_open else {}
        opts = {"movflags": "use_metadata_tags"} if path.suffix.lower() in (".mp4", ".mov", ".m4v") else {}
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
