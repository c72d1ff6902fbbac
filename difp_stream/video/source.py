"""Live sources with PyAV: a network source (RTSP, RTSPS, HTTP, SRT, ... anything FFmpeg opens), or a file played
as a camera, decoded in its own thread into a bounded queue, with reconnect and backoff. The consumer never blocks
the decoder: when the queue is full the oldest frame is dropped (and counted) so the output stays close to real
time."""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from ..errors import InputError, redact, redact_message
from .io import rotate


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
    stable: float = 30.0  # a connection that delivered frames this long resets the backoff to retry_delay
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
        self.waits: list[float] = []  # the backoff waited before each reconnection, in seconds
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
        # a connection that opens but delivers no frame counts as a failed attempt: the same backoff, the same limit;
        # one that delivered frames is not a failure (never given up on), but only one that stayed up for
        # ``stable`` seconds resets the backoff (a source that loops or drops every few seconds is not hammered)
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
                    before, opened = self.frames, time.monotonic()
                    try:
                        lost_at = self._read(c, lost_at)
                    finally:
                        c.close()
                    if not is_url(self.url) or self._stop.is_set():
                        return  # a file source ends at its end
                    if self.frames > before:
                        failures = 0
                        if lost_at - opened >= self.opts.stable:
                            delay = self.opts.retry_delay
                        self.log(f"source {self.name} lost; reconnecting in {delay:.1f} s")
                        self._backoff(delay)
                        delay = min(delay * 2, self.opts.max_delay)
                        continue
                    err = InputError("the connection delivered no frame")
                failures += 1
                if 0 <= self.opts.retries < failures:
                    self.error = InputError(f"cannot open {self.name} after {failures} attempt(s): {redact_message(err, self.url)}")
                    return
                self.log(f"source {self.name}: {redact_message(err, self.url)}; retrying in {delay:.1f} s")
                self._backoff(delay)
                delay = min(delay * 2, self.opts.max_delay)
        finally:
            self.done.set()
            with self._cv:
                self._cv.notify_all()

    def _backoff(self, delay: float) -> None:
        self.waits.append(delay)
        self._stop.wait(delay)

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
                img = rotate(frame.to_ndarray(format="rgb24"), int(round(frame.rotation or 0)))
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
            self.log(f"source {self.name}: {redact_message(e, self.url)}")
        return time.monotonic()



def _stream_fps(v) -> Fraction:
    """The stream's frame rate; RTSP streams without timing info report their RTP clock (90000): ignored."""
    for rate in (v.average_rate, v.guessed_rate):
        if rate and 1 <= rate <= 240:
            return Fraction(rate)
    return Fraction(25)
