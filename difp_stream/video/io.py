"""PyAV sources and sinks: decode a file, hand each frame (display-oriented RGB) to a callback, encode the result,
and copy the audio (and other) streams untouched, with timing, metadata and rotation kept."""
from __future__ import annotations

import logging

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable

import av
import numpy as np
from tqdm import tqdm

from ..errors import InputError, OutputError, UsageError
from ..staging import partial_path

log = logging.getLogger(__name__)


STREAM_TAG = "difp_stream_id"  # container tag tying a protected video to its key file


def stream_tag(path: str | Path) -> str | None:
    c = open_input(path)
    try:
        return c.metadata.get(STREAM_TAG)
    finally:
        c.close()


class Interrupted(Exception):
    """Ctrl-C during processing; the output holds the frames written so far and is playable."""

    def __init__(self, frames: int, path: Path):
        super().__init__(f"interrupted after {frames} frames; {path} holds them and is playable")
        self.frames, self.path = frames, path


@dataclass
class VideoInfo:
    width: int
    height: int
    fps: Fraction
    time_base: Fraction
    frames: int  # as declared by the container (0 when unknown)
    duration: float | None  # seconds
    rotation: int  # display rotation in degrees, as stored
    audio_streams: int
    codec: str


def probe(path: str | Path) -> VideoInfo:
    c = open_input(path)
    try:
        v = c.streams.video[0]
        rot = 0
        for f in c.decode(v):
            rot = int(round(f.rotation or 0))
            break
        dur = float(v.duration * v.time_base) if v.duration else (c.duration / 1e6 if c.duration else None)
        return VideoInfo(v.codec_context.width, v.codec_context.height, v.average_rate or v.guessed_rate or Fraction(25),
                         v.time_base, v.frames, dur, rot, len(c.streams.audio), v.codec_context.name)
    finally:
        c.close()


def open_input(path: str | Path, options: dict | None = None):
    p = str(path)
    if "://" not in p and not Path(p).exists():
        raise InputError(f"input not found: {p}")
    try:
        c = av.open(p, options=options or {})
    except (av.error.FFmpegError, OSError) as e:
        raise InputError(f"cannot open {p}: {e}") from None
    if not c.streams.video:
        c.close()
        raise InputError(f"{p} has no video stream")
    return c


def rotate(img: np.ndarray, rotation: int) -> np.ndarray:
    """Stored -> display orientation (FFmpeg's rotation is counter-clockwise degrees)."""
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(img, k)) if k else img


def _unrotate(img: np.ndarray, rotation: int) -> np.ndarray:
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(img, -k)) if k else img


# Metadata kept by default: what describes the picture and sound, nothing that says who, where or with what
# (GPS location, title, comments, artist, camera make/model/serial, creation time are dropped; --keep-metadata keeps
# them). Rotation travels as the display matrix, timing as timestamps, colour in the encoder's settings.
TECHNICAL_STREAM_TAGS = {"language"}


def kept_metadata(tags: dict, keep_all: bool, technical: set[str] = frozenset()) -> dict:
    return {k: v for k, v in tags.items() if k not in ("encoder", STREAM_TAG) and (keep_all or k in technical)}


def container_options(path: str | Path) -> dict:
    """Muxer options: MP4/MOV write our tags (the stream id) as plain metadata."""
    return {"movflags": "use_metadata_tags"} if Path(path).suffix.lower() in (".mp4", ".mov", ".m4v") else {}


X264_LIKE = ("libx264", "libx265", "h264", "hevc")


def encoder_options(codec: str, crf: int, preset: str) -> dict:
    if codec in X264_LIKE:
        return {"crf": str(crf), "preset": preset}
    if codec == "libvpx-vp9":  # constant quality, fast: x264's crf 18 is about vp9's 31
        return {"crf": str(min(63, round(crf * 1.7))), "b": "0", "deadline": "realtime", "cpu-used": "8",
                "row-mt": "1"}
    if codec == "libsvtav1":
        return {"crf": str(min(63, round(crf * 1.7))), "preset": "10"}
    return {}


def choose_codec(dst: str | Path, codec: str | None) -> str:
    """The video encoder for ``dst``'s container: ``codec`` when the container takes it (else UsageError), or
    (None) H.264 where the container takes it, else the container's own default (e.g. VP9 for .webm)."""
    tmp = partial_path(Path(dst))
    try:
        c = av.open(str(tmp), "w")
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise OutputError(f"cannot write {dst}: {e}") from None
    try:
        supported = c.supported_codecs
        if codec is None:
            return "libx264" if "libx264" in supported else c.default_video_codec
        if codec not in supported:
            raise UsageError(f"{Path(dst).suffix or dst} files cannot hold {codec} video; "
                             f"omit --codec (this container's default is {c.default_video_codec})")
        return codec
    finally:
        c.close()
        tmp.unlink(missing_ok=True)


def first_rotation(path: str | Path) -> int:
    """The display rotation of the first video frame (phone videos), known before the output's header is written."""
    c = open_input(path)
    try:
        for f in c.decode(video=0):
            return int(round(f.rotation or 0))
        return 0
    except av.error.FFmpegError:
        return 0
    finally:
        c.close()


class _Output:
    """The output container under its partial name: the video stream (codec, timing, rotation, the metadata policy)
    and the copied audio and subtitle streams. A failed write (disk full, file too large) is an OutputError."""

    def __init__(self, inp, vin, dst: Path, tmp: Path, codec: str, crf: int, preset: str, pix_fmt: str | None,
                 rotation: int, metadata: dict | None, keep_metadata: bool, warn, keep_subtitles: bool = False):
        self.dst = dst
        try:
            self.c = av.open(str(tmp), "w", options=container_options(dst))
        except (av.error.FFmpegError, OSError) as e:
            raise OutputError(f"cannot write {dst}: {e}") from None
        w, h = vin.codec_context.width, vin.codec_context.height
        self.rate = vin.average_rate or vin.guessed_rate or Fraction(25)
        v = self.video = self.c.add_stream(codec, rate=self.rate)
        v.width, v.height = w, h
        v.pix_fmt = pix_fmt or ("yuv420p" if (w % 2 == 0 and h % 2 == 0) else "yuv444p")
        v.time_base = vin.time_base
        v.codec_context.time_base = vin.time_base  # variable frame rates keep every timestamp (no rounding to 1/fps)
        v.options = encoder_options(codec, crf, preset)
        if rotation:
            v.set_display_rotation(rotation)
        self.c.metadata.update(kept_metadata(inp.metadata, keep_metadata))
        self.c.metadata.update(metadata or {})
        v.metadata.update(kept_metadata(vin.metadata, keep_metadata, TECHNICAL_STREAM_TAGS))
        self.copies = {}
        if inp.streams.subtitles and not keep_subtitles:  # drones and dashcams write GPS and serials as subtitles
            log.info(f"{len(inp.streams.subtitles)} subtitle track(s) dropped (they can carry GPS, names or serials; "
                     "--keep-subtitles keeps them)")
        for s in list(inp.streams.audio) + (list(inp.streams.subtitles) if keep_subtitles else []):
            try:
                self.copies[s] = self.c.add_stream_from_template(s)
                self.copies[s].metadata.update(kept_metadata(s.metadata, keep_metadata, TECHNICAL_STREAM_TAGS))
            except (ValueError, av.error.FFmpegError) as e:
                warn(f"stream {s.index} ({s.type}) cannot be copied into {dst.suffix}: {e}")

    def mux(self, packets) -> None:
        try:
            for p in packets:
                self.c.mux(p)
        except (av.error.FFmpegError, OSError) as e:
            raise OutputError(f"cannot write {self.dst}: {getattr(e, 'strerror', None) or e}") from None

    def copy(self, packet) -> None:
        packet.stream = self.copies[packet.stream]
        self.mux([packet])

    def finish(self) -> None:
        self.mux(self.video.encode(None))
        try:
            self.c.close()
        except (av.error.FFmpegError, OSError) as e:
            raise OutputError(f"cannot write {self.dst}: {getattr(e, 'strerror', None) or e}") from None

    def abort(self) -> None:
        try:
            self.c.close()
        except (av.error.FFmpegError, OSError):
            pass  # already failing: the first error is the one to report


def transcode(src: str | Path, dst: str | Path, process: Callable[[int, np.ndarray], np.ndarray],
              codec: str | None = None, crf: int = 18, preset: str = "veryfast", progress: bool = True,
              desc: str = "protecting", on_warning: Callable[[str], None] | None = None,
              metadata: dict | None = None, pix_fmt: str | None = None, keep_metadata: bool = False,
              keep_subtitles: bool = False) -> int:
    """Decode ``src``, call ``process(index, rgb)`` on every frame (display orientation), encode to ``dst``.
    Audio streams (and subtitle streams with ``keep_subtitles``) are copied packet by packet; identifying metadata
    is dropped unless ``keep_metadata``.
    The output is written to a hidden partial file and renamed when complete; on error it is removed; on Ctrl-C
    (or SIGTERM, raised as KeyboardInterrupt by the caller) it is finalised (playable) and kept. Returns frames
    written."""
    warn = on_warning or log.warning
    dst = Path(dst)
    codec = choose_codec(dst, codec)
    rotation = first_rotation(src)  # before the header is written: an audio packet may be muxed first
    inp = open_input(src)
    vin = inp.streams.video[0]
    vin.thread_type = "AUTO"
    tmp = partial_path(dst)
    try:
        out = _Output(inp, vin, dst, tmp, codec, crf, preset, pix_fmt, rotation, metadata, keep_metadata, warn,
                      keep_subtitles)
    except BaseException:
        inp.close()
        raise
    try:
        written, interrupted = _pump(inp, vin, out, process, rotation, progress, desc, warn)
        out.finish()
        inp.close()
    except BaseException:
        out.abort()
        inp.close()
        tmp.unlink(missing_ok=True)
        raise
    if written == 0 and not interrupted:
        tmp.unlink(missing_ok=True)
        raise InputError(f"{src}: no decodable video frames")
    os.replace(tmp, dst)
    if interrupted:
        raise Interrupted(written, dst)
    return written


def _pump(inp, vin, out: _Output, process, rotation: int, progress: bool, desc: str, warn) -> tuple[int, bool]:
    """Every video frame through ``process`` into the encoder, the other packets copied; returns (frames written,
    interrupted). A damaged packet is skipped; a input that ends early keeps what decoded."""
    total = vin.frames or (int(float(vin.duration * vin.time_base) * out.rate) if vin.duration else None)
    bar = tqdm(total=total or None, desc=desc, unit="frame", disable=not progress, dynamic_ncols=True)
    written, last_pts = 0, None
    try:
        for packet in inp.demux([vin, *out.copies]):
            if packet.stream is not vin:
                if packet.dts is not None:
                    out.copy(packet)
                continue
            try:
                frames = packet.decode()
            except av.error.InvalidDataError as e:
                warn(f"damaged video data skipped near frame {written}: {e}")
                continue
            for frame in frames:
                img = _unrotate(process(written, rotate(frame.to_ndarray(format="rgb24"), rotation)), rotation)
                new = av.VideoFrame.from_ndarray(img, format="rgb24")
                pts = frame.pts if frame.pts is not None else written
                if last_pts is not None and pts <= last_pts:
                    pts = last_pts + 1
                new.pts, new.time_base, last_pts = pts, vin.time_base, pts
                out.mux(out.video.encode(new))
                written += 1
                bar.update(1)
    except KeyboardInterrupt:
        return written, True
    except av.error.FFmpegError as e:
        warn(f"input ends early (truncated or damaged): {e}; {written} frames kept")
    finally:
        bar.close()
    return written, False


def count_frames(path: str | Path) -> int:
    c = open_input(path)
    try:
        return sum(1 for _ in c.decode(video=0))
    finally:
        c.close()


def video_packets_sha256(path: str | Path) -> str:
    """SHA-256 of the first video stream's encoded packets, in order: the same after a remux that copies them."""
    import hashlib

    h = hashlib.sha256()
    c = open_input(path)
    try:
        for p in c.demux(c.streams.video[0]):
            if p.size:
                h.update(bytes(p))
    finally:
        c.close()
    return h.hexdigest()
