"""The key file (``.difpkeys``): versioned, per-track data keys, authenticated, streamable.

Layout (all integers little-endian)::

    magic  b"DIFPKEY" + version byte (1)
    record*: type (1 byte) | length (u32) | body
      'H' header   JSON, plaintext, nothing sensitive: format, stream_id, created, recipient fingerprint, shapes
      'T' track    track_id (u32) | sealed data key (ephemeral X25519 pub 32 | nonce 12 | AES-GCM 32+16)
      'F' face     track_id (u32) | seq (u32) | nonce 12 | AES-256-GCM(data key, zlib(payload))
      'E' end      track_id (u32) | nonce 12 | AES-256-GCM(data key, count u32)   one per track, on close

Every encrypted body is bound (AES-GCM associated data) to a digest of the header's format, stream id, shapes,
model and resolution, to its record type, its track and its sequence number, so a flipped byte, a record moved between files or tracks, or a reordering fails authentication.
The 'E' records prove that a track is complete; a file cut short (a crash, a live stream) is still readable up to
its last complete record (``partial=True``).

Face payload: frame index (u32), the 2x3 alignment transform (6 f32), steps (u16), strength (f32), mode (u8: 0
diffusion, 1 exact), then fp16 arrays z_ts, correction, id_code, style; in exact mode also the ROI (4 i32) and a
PNG of the original pixels there.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..difp.protector import FaceKey
from .crypto import KeyError_, fingerprint, seal, unseal

MAGIC = b"DIFPKEY"
VERSION = 1
_HEAD = struct.Struct("<BI")
_FACE = struct.Struct("<I6fHfB")
MAX_RECORD = 64 << 20


@dataclass
class FaceRecord:
    track_id: int
    frame_index: int
    transform: np.ndarray  # float32 [2, 3]: frame -> model-resolution crop
    key: FaceKey
    exact: tuple[tuple[int, int, int, int], np.ndarray] | None = None  # ROI (x0, y0, x1, y1) and its RGB pixels


BOUND_FIELDS = ("format", "stream_id", "shapes", "model", "resolution")
ARRAYS = ("z_ts", "correction", "id_code", "style")


def binding(header: dict) -> bytes:
    """Digest of the header fields every record is bound to (those that an export keeps unchanged)."""
    core = {k: header.get(k) for k in BOUND_FIELDS}
    return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).digest()


def _aad(kind: bytes, bound: bytes, track_id: int, seq: int = 0) -> bytes:
    return b"difp1|" + kind + bound + struct.pack("<II", track_id, seq)


def encode_payload(rec: FaceRecord) -> bytes:
    k = rec.key
    out = [_FACE.pack(rec.frame_index, *np.asarray(rec.transform, np.float32).ravel().tolist(), k.steps, k.strength,
                      1 if rec.exact else 0)]
    for a in (k.z_ts, k.correction, k.id_code, k.style):
        out.append(np.ascontiguousarray(a, np.float16).tobytes())
    if rec.exact:
        import cv2

        box, pixels = rec.exact
        ok, png = cv2.imencode(".png", pixels[:, :, ::-1])
        out.append(struct.pack("<4i", *box) + png.tobytes())
    return zlib.compress(b"".join(out), 6)


def decode_payload(track_id: int, data: bytes, shapes: dict) -> FaceRecord:
    raw = zlib.decompress(data)
    f = _FACE.unpack_from(raw)
    pos = _FACE.size
    arrays = []
    for name in ("z_ts", "correction", "id_code", "style"):
        shape = tuple(shapes[name])
        n = int(np.prod(shape)) * 2
        if pos + n > len(raw):
            raise KeyError_("face record too short for the shapes in the header")
        arrays.append(np.frombuffer(raw, np.float16, count=n // 2, offset=pos).reshape(shape).copy())
        pos += n
    exact = None
    if f[9]:
        import cv2

        box = struct.unpack_from("<4i", raw, pos)
        pixels = cv2.imdecode(np.frombuffer(raw[pos + 16:], np.uint8), cv2.IMREAD_COLOR)
        if pixels is None:
            raise KeyError_("exact-mode residual cannot be decoded")
        exact = (box, pixels[:, :, ::-1].copy())
    key = FaceKey(arrays[0], arrays[1], arrays[2], arrays[3], int(f[7]), float(f[8]))
    return FaceRecord(track_id, int(f[0]), np.array(f[1:7], np.float32).reshape(2, 3), key, exact)


class KeyWriter:
    """Append face records as they come; each track gets its own data key, sealed to the recipient."""

    def __init__(self, path: str | Path, recipient, shapes: dict, info: dict | None = None,
                 stream_id: bytes | None = None):
        self.path = Path(path)
        self.recipient = recipient
        self.stream_id = stream_id or os.urandom(16)
        self.shapes = shapes
        self._f = open(self.path, "wb")
        self._keys: dict[int, bytes] = {}
        self._seq: dict[int, int] = {}
        header = {"format": VERSION, "stream_id": self.stream_id.hex(), "recipient": fingerprint(recipient),
                  "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "shapes": shapes, **(info or {})}
        self._f.write(MAGIC + bytes([VERSION]))
        self._record(b"H", json.dumps(header, sort_keys=True).encode())
        self.bound = binding(header)

    def _record(self, kind: bytes, body: bytes) -> None:
        self._f.write(_HEAD.pack(kind[0], len(body)) + body)

    def append(self, rec: FaceRecord) -> None:
        t = int(rec.track_id)
        if t not in self._keys:
            self._keys[t] = AESGCM.generate_key(256)
            self._seq[t] = 0
            self._record(b"T", struct.pack("<I", t) + seal(self._keys[t], self.recipient, _aad(b"T", self.bound, t)))
        seq = self._seq[t]
        nonce = os.urandom(12)
        ct = AESGCM(self._keys[t]).encrypt(nonce, encode_payload(rec), _aad(b"F", self.bound, t, seq))
        self._record(b"F", struct.pack("<II", t, seq) + nonce + ct)
        self._seq[t] = seq + 1

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        if self._f.closed:
            return
        for t, key in self._keys.items():
            nonce = os.urandom(12)
            ct = AESGCM(key).encrypt(nonce, struct.pack("<I", self._seq[t]), _aad(b"E", self.bound, t))
            self._record(b"E", struct.pack("<I", t) + nonce + ct)
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        self._keys.clear()  # the filter side forgets the data keys: it cannot decrypt what it wrote

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass
class _Raw:
    kind: str
    body: bytes


def read_raw(data: bytes) -> tuple[dict, list[_Raw], bool]:
    """Parse the record structure (no decryption). Returns header, records, and whether the file was cut short."""
    if len(data) < 8 or data[:7] != MAGIC:
        raise KeyError_("not a difp-stream key file")
    if data[7] != VERSION:
        raise KeyError_(f"key file format {data[7]} is not supported (this version reads {VERSION})")
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
        if chr(kind) not in "HTFE":
            raise KeyError_(f"key file is damaged (unknown record type {kind})")
        recs.append(_Raw(chr(kind), data[pos:pos + n]))
        pos += n
    if not recs or recs[0].kind != "H":
        raise KeyError_("key file has no header")
    try:
        header = json.loads(recs[0].body)
        if len(bytes.fromhex(header["stream_id"])) != 16:
            raise ValueError
        for name in ARRAYS:
            shape = header["shapes"][name]
            if not (isinstance(shape, list) and 0 < len(shape) <= 4
                    and all(isinstance(v, int) and 0 < v <= 4096 for v in shape) and np.prod(shape) <= 1 << 20):
                raise ValueError
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        raise KeyError_("key file header is damaged") from None
    return header, recs[1:], truncated


class KeyReader:
    """Open a key file with the recipient's secret; ``records(tracks)`` yields decrypted :class:`FaceRecord`s."""

    def __init__(self, path: str | Path, secret, partial: bool = False):
        self.path = Path(path)
        try:
            data = self.path.read_bytes()
        except OSError as e:
            raise KeyError_(f"cannot read key file {path}: {e}") from None
        self.header, self._recs, self.truncated = read_raw(data)
        self.stream_id = bytes.fromhex(self.header["stream_id"])
        self.bound = binding(self.header)
        self.secret = secret
        self.partial = partial
        self.tracks = sorted({struct.unpack_from("<I", r.body)[0] for r in self._recs if r.kind == "T" and len(r.body) >= 4})
        ended = {struct.unpack_from("<I", r.body)[0] for r in self._recs if r.kind == "E" and len(r.body) >= 4}
        self.complete = not self.truncated and set(self.tracks) <= ended
        if not self.complete and not partial:
            raise KeyError_(f"key file {path} is incomplete (cut short{' mid-record' if self.truncated else ''}); "
                            "use --partial to read it up to its last complete record")
        self._data_keys: dict[int, bytes] = {}

    def _key(self, t: int) -> bytes:
        if t not in self._data_keys:
            blob = next((r.body[4:] for r in self._recs if r.kind == "T" and struct.unpack_from("<I", r.body)[0] == t), None)
            if blob is None:
                raise KeyError_(f"track {t} is not in the key file (tracks: {self.tracks})")
            self._data_keys[t] = unseal(blob, self.secret, _aad(b"T", self.bound, t))
        return self._data_keys[t]

    def records(self, tracks: list[int] | None = None) -> Iterator[FaceRecord]:
        want = set(self.tracks if tracks is None else tracks)
        missing = want - set(self.tracks)
        if missing:
            raise KeyError_(f"track(s) {sorted(missing)} not in the key file (tracks: {self.tracks})")
        seen: dict[int, int] = {t: 0 for t in want}
        for r in self._recs:
            if r.kind == "F" and len(r.body) >= 8 + 12 + 16:
                t, seq = struct.unpack_from("<II", r.body)
                if t not in want:
                    continue
                if seq != seen[t]:
                    raise KeyError_(f"track {t}: record {seen[t]} is missing or out of order (file altered)")
                try:
                    plain = AESGCM(self._key(t)).decrypt(r.body[8:20], r.body[20:], _aad(b"F", self.bound, t, seq))
                except InvalidTag:
                    raise KeyError_(f"track {t}: record {seq} failed authentication (the key file was altered)") from None
                seen[t] += 1
                try:
                    yield decode_payload(t, plain, self.header["shapes"])
                except (zlib.error, struct.error, ValueError) as e:
                    raise KeyError_(f"track {t}: record {seq} is malformed: {e}") from None
            elif r.kind == "F":
                raise KeyError_("key file is damaged (short face record)")
            elif r.kind == "E" and len(r.body) >= 4 + 12 + 16:
                t = struct.unpack_from("<I", r.body)[0]
                if t not in want:
                    continue
                try:
                    count = struct.unpack("<I", AESGCM(self._key(t)).decrypt(r.body[4:16], r.body[16:],
                                                                             _aad(b"E", self.bound, t)))[0]
                except InvalidTag:
                    raise KeyError_(f"track {t}: end record failed authentication (the key file was altered)") from None
                if count != seen[t]:
                    raise KeyError_(f"track {t}: {count - seen[t]} record(s) missing (the key file was altered)")
            elif r.kind == "E":
                raise KeyError_("key file is damaged (short end record)")

    def export_track(self, track: int, recipient, path: str | Path) -> None:
        """A new key file holding only ``track``, its data key re-sealed to ``recipient``."""
        key = self._key(track)
        if track not in self.tracks:
            raise KeyError_(f"track {track} not in the key file")
        header = dict(self.header, recipient=fingerprint(recipient), exported_from=self.header.get("recipient"),
                      exported_track=track)
        out = io.BytesIO()
        out.write(MAGIC + bytes([VERSION]))
        for kind, body in [("H", json.dumps(header, sort_keys=True).encode()),
                           ("T", struct.pack("<I", track) + seal(key, recipient, _aad(b"T", self.bound, track)))]:
            out.write(_HEAD.pack(ord(kind), len(body)) + body)
        for r in self._recs:
            if r.kind in "FE" and len(r.body) >= 4 and struct.unpack_from("<I", r.body)[0] == track:
                out.write(_HEAD.pack(ord(r.kind), len(r.body)) + r.body)
        Path(path).write_bytes(out.getvalue())
