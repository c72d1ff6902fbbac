"""The key file (``.difpkeys``): versioned, per-track data keys, encrypted, signed by the filter, streamable.

Layout (all integers little-endian)::

    magic  b"DIFPKEY" + version byte (3; version 2 files, without 'V' records, are read too)
    record*: type (1 byte) | length (u32) | body
      'H' header   JSON, plaintext: format, stream_id, created, recipient fingerprint, signer (Ed25519 public key),
                   shapes, model fingerprint and resolution, media kind -- no file names, URLs or people
      'T' track    track_id (u32) | sealed data key (ephemeral X25519 pub 32 | nonce 12 | AES-GCM 32+16)
      'V' video    track_id (u32) | seq (u32) | nonce 12 | AES-256-GCM(data key, chunk): a video's faithful face
                   regions of one track over a group of frames, as one H.264 stream (``keys/video.py``); written
                   just before the face records that point into it
      'F' face     track_id (u32) | seq (u32) | nonce 12 | AES-256-GCM(data key, zlib(payload))
      'E' end      track_id (u32) | nonce 12 | AES-256-GCM(data key, count u32)   one per track, on close
      'S' signed   Ed25519 signature (64) | statement (JSON): the header's digest, and per track the count of its
                   records, a hash chain over their bodies and whether it ended; 'final' on close, plus the media
                   it belongs to (the protected image's SHA-256, or the digest of the video's encoded packets)
      'X' export   JSON (unsigned): the new recipient of a file made by ``keys export`` (one track kept)

Every encrypted body is bound (AES-GCM associated data) to a digest of the header's format, stream id, shapes,
model and resolution, to its record type, its track and its sequence number, so a flipped byte, a record moved
between files or tracks, or a reordering fails authentication. The signed statements (written every few seconds and
on close) prove who wrote the file: a reader accepts only a signer it trusts, and only records that a statement
covers; a removed track, an added or edited record, or an edited header no longer matches. A file cut short (a crash,
a live stream) is readable up to its last statement (``partial=True``).

Face payload: frame index (u32), the 2x3 alignment transform (6 f32), steps (u16), strength (f32), mode (u8: 0
diffusion, 1 pixels, 2 cover, 3 pixels in the track's video chunk), then fp16 arrays z_ts, correction, id_code,
style (not in cover mode); in pixels and cover mode also the ROI (4 i32) and the original pixels there: a PNG
(``--recovery exact``, lossless) or a JPEG, 4:4:4 (``--recovery faithful`` on an image, and covers), decoded only
when it is pasted; in mode 3 (``--recovery faithful`` on a video) no arrays: the ROI and the frame's index (u16)
in the track's last 'V' chunk, whose pixels restore the face. A cover record is a face the filter blurred instead
of replacing (a profile, a face too small or cut by the frame, a failed protection): it holds the region the blur
changed and its original pixels, whatever the recovery mode, so that every face the filter touched comes back.
"""
from __future__ import annotations

import hashlib
import json
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from ..difp.protector import FaceKey
from .crypto import KeyError_
from .video import InChunk

MAGIC = b"DIFPKEY"
VERSION = 3
READS = (2, 3)  # the versions this one reads
_HEAD = struct.Struct("<BI")
_FACE = struct.Struct("<I6fHfB")
MAX_RECORD = 64 << 20
MAX_STEPS = 50  # a record asking for more DDIM steps is refused (each step costs U-Net calls when recovering)
MAX_EXACT = 16384  # largest side of an exact-mode region, pixels
_SIG = 64


@dataclass
class FaceRecord:
    track_id: int
    frame_index: int
    transform: np.ndarray  # float32 [2, 3]: frame -> model-resolution crop
    key: FaceKey | None  # None: a cover record (the face was blurred; ``exact`` holds what the blur changed)
    exact: tuple[tuple[int, int, int, int], np.ndarray | bytes] | None = None  # ROI (x0, y0, x1, y1) and its RGB
    #                                                     pixels (as read: their PNG or JPEG, see exact_pixels)
    quality: int = 0  # how the pixels are stored: 0 a PNG (lossless), else a JPEG of this quality (4:4:4), or
    #                   in a video's key file a frame of the track's H.264 chunk (coded to video.target_db)

    @property
    def lossless(self) -> bool:
        """The region's pixels are stored exactly (a PNG, or not yet encoded at quality 0)."""
        if self.exact is None:
            return False
        px = self.exact[1]
        return bytes(px[:4]) == b"\x89PNG" if isinstance(px, (bytes, bytearray, memoryview)) else (
            isinstance(px, np.ndarray) and not self.quality)

    @property
    def covered(self) -> bool:
        """A face the filter blurred (no diffusion key; its region's original pixels only)."""
        return self.key is None and not (self.exact and isinstance(self.exact[1], InChunk))

    def exact_pixels(self) -> np.ndarray:
        """The region's pixels, decoded from their PNG or JPEG on demand (a long recovery holds those, not
        frames)."""
        box, px = self.exact
        if isinstance(px, np.ndarray):
            return px
        if isinstance(px, InChunk):
            return px.pixels(box)
        import cv2

        x0, y0, x1, y1 = box
        png = len(px) >= 24 and px[:8] == b"\x89PNG\r\n\x1a\n"
        if not (png or px[:3] == b"\xff\xd8\xff") or (png and struct.unpack(">II", px[16:24]) != (x1 - x0, y1 - y0)):
            raise KeyError_("face pixels do not match their region")
        pixels = cv2.imdecode(np.frombuffer(px, np.uint8), cv2.IMREAD_COLOR)
        if pixels is None or pixels.shape[:2] != (y1 - y0, x1 - x0):
            raise KeyError_("face pixels cannot be decoded to their region")
        return pixels[:, :, ::-1].copy()


BOUND_FIELDS = ("format", "stream_id", "shapes", "model", "resolution")
ARRAYS = ("z_ts", "correction", "id_code", "style")


def binding(header: dict) -> bytes:
    """Digest of the header fields every record is bound to (those that an export keeps unchanged)."""
    core = {k: header.get(k) for k in BOUND_FIELDS}
    return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).digest()


def _aad(kind: bytes, bound: bytes, track_id: int, seq: int = 0) -> bytes:
    return b"difp1|" + kind + bound + struct.pack("<II", track_id, seq)


def encode_payload(rec: FaceRecord) -> bytes:
    video = bool(rec.exact) and isinstance(rec.exact[1], InChunk)
    k = None if video else rec.key  # (a video record's region restores the face: no diffusion key beside it)
    if k is None and not rec.exact:
        raise ValueError("a cover record needs the region's pixels")
    mode = 3 if video else 2 if k is None else 1 if rec.exact else 0
    out = [_FACE.pack(rec.frame_index, *np.asarray(rec.transform, np.float32).ravel().tolist(),
                      0 if k is None else k.steps, 0.0 if k is None else k.strength, mode)]
    for a in () if k is None else (k.z_ts, k.correction, k.id_code, k.style):
        out.append(np.ascontiguousarray(a, np.float16).tobytes())
    if mode == 3:
        out.append(struct.pack("<4iH", *rec.exact[0], rec.exact[1].index))
    elif rec.exact:
        import cv2

        box, pixels = rec.exact
        if rec.quality:  # faithful: a JPEG without chroma subsampling (a face's colour edges stay)
            ok, img = cv2.imencode(".jpg", pixels[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rec.quality),
                                                                 cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                                                                 cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444])
        else:
            ok, img = cv2.imencode(".png", pixels[:, :, ::-1])
        out.append(struct.pack("<4i", *box) + img.tobytes())
    return zlib.compress(b"".join(out), 6)


def _inflate(data: bytes, limit: int) -> bytes:
    """zlib with a ceiling: a record can never expand past what its header's shapes allow."""
    d = zlib.decompressobj()
    out = d.decompress(data, limit)
    if d.unconsumed_tail or not d.eof:
        raise KeyError_("face record is larger than its shapes allow")
    return out


def decode_payload(track_id: int, data: bytes, shapes: dict) -> FaceRecord:
    fixed = _FACE.size + sum(int(np.prod(shapes[n])) * 2 for n in ARRAYS)
    raw = _inflate(data, fixed + 16 + 3 * MAX_EXACT * 1024)  # an exact PNG: at most ~3 bytes a pixel of a large ROI
    if len(raw) < _FACE.size:
        raise KeyError_("face record too short for the shapes in the header")
    f = _FACE.unpack_from(raw)
    cover = f[9] in (2, 3)  # no diffusion arrays: a cover's or a video record's region restores the face
    if len(raw) < (_FACE.size if cover else fixed) or f[9] > 3:
        raise KeyError_("face record too short for the shapes in the header" if f[9] <= 3 else
                        f"face record has an unknown mode ({f[9]})")
    carried = f[7] == 0 and f[8] == 0  # a carried frame's (or a cover's) key holds no diffusion steps
    if not ((carried or (not cover and 1 <= f[7] <= MAX_STEPS and 0 < f[8] <= 1)) and np.isfinite(f[1:7]).all()):
        raise KeyError_(f"face record has impossible settings (steps {f[7]}, strength {f[8]:.3g})")
    pos = _FACE.size
    arrays = []
    for name in () if cover else ARRAYS:
        shape = tuple(shapes[name])
        n = int(np.prod(shape)) * 2
        if pos + n > len(raw):
            raise KeyError_("face record too short for the shapes in the header")
        arrays.append(np.frombuffer(raw, np.float16, count=n // 2, offset=pos).reshape(shape).copy())
        pos += n
    exact = None
    if f[9]:
        if pos + 16 > len(raw):
            raise KeyError_("exact-mode record too short")
        box = struct.unpack_from("<4i", raw, pos)
        x0, y0, x1, y1 = box
        if not (0 <= x0 < x1 <= x0 + MAX_EXACT and 0 <= y0 < y1 <= y0 + MAX_EXACT):
            raise KeyError_("exact-mode region is impossible")
        if f[9] == 3:
            if len(raw) != pos + 18:
                raise KeyError_("video-mode record has the wrong length")
            exact = (box, InChunk(struct.unpack_from("<H", raw, pos + 16)[0]))
        else:
            exact = (box, raw[pos + 16:])
    elif pos != len(raw):
        raise KeyError_("face record is longer than its shapes")
    key = None if cover else FaceKey(arrays[0], arrays[1], arrays[2], arrays[3], int(f[7]), float(f[8]))
    return FaceRecord(track_id, int(f[0]), np.array(f[1:7], np.float32).reshape(2, 3), key, exact)


def _chain_start(header_digest: bytes, track: int) -> bytes:
    return hashlib.sha256(b"difp-chain1" + header_digest + struct.pack("<I", track)).digest()


def _chain_next(chain: bytes, body: bytes) -> bytes:
    return hashlib.sha256(chain + hashlib.sha256(body).digest()).digest()


@dataclass
class _Raw:
    """One record; its body is read from the (memory-mapped) file when asked for, so a large file of exact-mode
    pixels is not held in memory."""

    kind: str
    buf: object
    start: int
    size: int

    @property
    def body(self) -> bytes:
        return bytes(self.buf[self.start:self.start + self.size])


def read_raw(data: bytes) -> tuple[dict, bytes, list[_Raw], bool]:
    """Parse the record structure (no decryption). Returns header, its raw body, the records, and whether the file
    was cut short."""
    if len(data) < 8 or data[:7] != MAGIC:
        raise KeyError_("not a difp-stream key file")
    if data[7] not in READS:
        raise KeyError_(f"key file format {data[7]} is not supported (this version reads "
                        f"{', '.join(map(str, READS))})")
    pos, recs, truncated = 8, [], False
    while pos < len(data):
        if pos + _HEAD.size > len(data):
            truncated = True
            break
        kind, n = _HEAD.unpack_from(data, pos)
        pos += _HEAD.size
        if n > MAX_RECORD:
            raise KeyError_("key file is damaged (impossible record length)")
        if pos + n > len(data):
            truncated = True
            break
        if chr(kind) not in "HTFESXV":
            raise KeyError_(f"key file is damaged (unknown record type {kind})")
        recs.append(_Raw(chr(kind), data, pos, n))
        pos += n
    if not recs or recs[0].kind != "H":
        raise KeyError_("key file has no header")
    try:
        header = json.loads(recs[0].body)
        if len(bytes.fromhex(header["stream_id"])) != 16 or len(bytes.fromhex(header["signer"])) != 32:
            raise ValueError
        for name in ARRAYS:
            shape = header["shapes"][name]
            if not (isinstance(shape, list) and 0 < len(shape) <= 4
                    and all(isinstance(v, int) and 0 < v <= 4096 for v in shape) and np.prod(shape) <= 1 << 20):
                raise ValueError
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        raise KeyError_("key file header is damaged") from None
    return header, recs[0].body, recs[1:], truncated


def _track_of(r: _Raw) -> int:
    if r.size < 4:
        raise KeyError_(f"key file is damaged (short {r.kind} record)")
    return struct.unpack_from("<I", r.buf, r.start)[0]
