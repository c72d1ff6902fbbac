"""The key file (``.difpkeys``): versioned, per-track data keys, encrypted, signed by the filter, streamable.

Layout (all integers little-endian)::

    magic  b"DIFPKEY" + version byte (2)
    record*: type (1 byte) | length (u32) | body
      'H' header   JSON, plaintext: format, stream_id, created, recipient fingerprint, signer (Ed25519 public key),
                   shapes, model fingerprint and resolution, media kind -- no file names, URLs or people
      'T' track    track_id (u32) | sealed data key (ephemeral X25519 pub 32 | nonce 12 | AES-GCM 32+16)
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
diffusion, 1 exact), then fp16 arrays z_ts, correction, id_code, style; in exact mode also the ROI (4 i32) and a
PNG of the original pixels there (decoded only when it is pasted).
"""
from __future__ import annotations

import hashlib
import io
import json
import mmap
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
from ..errors import OutputError
from .crypto import KeyError_, fingerprint, seal, unseal
from .signing import default_trusted, host_signer, raw, sign, signer_fingerprint, verify

MAGIC = b"DIFPKEY"
VERSION = 2
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
    key: FaceKey
    exact: tuple[tuple[int, int, int, int], np.ndarray | bytes] | None = None  # ROI (x0, y0, x1, y1) and its RGB
    #                                                                   pixels (as read: their PNG, see exact_pixels)

    def exact_pixels(self) -> np.ndarray:
        """The exact-mode pixels, decoded from their PNG on demand (a long recovery holds PNGs, not frames)."""
        box, px = self.exact
        if isinstance(px, np.ndarray):
            return px
        import cv2

        x0, y0, x1, y1 = box
        if len(px) < 24 or px[:8] != b"\x89PNG\r\n\x1a\n" or struct.unpack(">II", px[16:24]) != (x1 - x0, y1 - y0):
            raise KeyError_("exact-mode pixels do not match their region")
        pixels = cv2.imdecode(np.frombuffer(px, np.uint8), cv2.IMREAD_COLOR)
        if pixels is None:
            raise KeyError_("exact-mode pixels cannot be decoded")
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
    if len(raw) < fixed:
        raise KeyError_("face record too short for the shapes in the header")
    f = _FACE.unpack_from(raw)
    carried = f[7] == 0 and f[8] == 0  # a carried frame's key holds the clean latent: no diffusion steps
    if not ((carried or (1 <= f[7] <= MAX_STEPS and 0 < f[8] <= 1)) and np.isfinite(f[1:7]).all()):
        raise KeyError_(f"face record has impossible settings (steps {f[7]}, strength {f[8]:.3g})")
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
        if pos + 16 > len(raw):
            raise KeyError_("exact-mode record too short")
        box = struct.unpack_from("<4i", raw, pos)
        x0, y0, x1, y1 = box
        if not (0 <= x0 < x1 <= x0 + MAX_EXACT and 0 <= y0 < y1 <= y0 + MAX_EXACT):
            raise KeyError_("exact-mode region is impossible")
        exact = (box, raw[pos + 16:])
    elif pos != len(raw):
        raise KeyError_("face record is longer than its shapes")
    key = FaceKey(arrays[0], arrays[1], arrays[2], arrays[3], int(f[7]), float(f[8]))
    return FaceRecord(track_id, int(f[0]), np.array(f[1:7], np.float32).reshape(2, 3), key, exact)


def _chain_start(header_digest: bytes, track: int) -> bytes:
    return hashlib.sha256(b"difp-chain1" + header_digest + struct.pack("<I", track)).digest()


def _chain_next(chain: bytes, body: bytes) -> bytes:
    return hashlib.sha256(chain + hashlib.sha256(body).digest()).digest()


class KeyWriter:
    """Append face records as they come; each track gets its own data key, sealed to the recipient. Every
    ``checkpoint_seconds`` (and on close) the records so far are signed with ``signer`` (default: this host's)."""

    def __init__(self, path: str | Path, recipient, shapes: dict, info: dict | None = None,
                 stream_id: bytes | None = None, signer=None, checkpoint_seconds: float = 2.0):
        self.path = Path(path)
        self.recipient = recipient
        self.signer = signer or host_signer()
        self.stream_id = stream_id or os.urandom(16)
        self.shapes = shapes
        self.checkpoint_seconds = checkpoint_seconds
        self._f = open(self.path, "wb")
        self._keys: dict[int, bytes] = {}
        self._seq: dict[int, int] = {}
        self._chains: dict[int, list] = {}  # track -> [records, chain, ended]
        header = {"format": VERSION, "stream_id": self.stream_id.hex(), "recipient": fingerprint(recipient),
                  "signer": raw(self.signer.public_key()).hex(),
                  "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "shapes": shapes, **(info or {})}
        body = json.dumps(header, sort_keys=True).encode()
        self.header_digest = hashlib.sha256(body).digest()
        self._f.write(MAGIC + bytes([VERSION]))
        self._record(b"H", body)
        self.bound = binding(header)
        self._signed_at, self._dirty = time.monotonic(), False

    def _record(self, kind: bytes, body: bytes) -> None:
        try:
            self._f.write(_HEAD.pack(kind[0], len(body)) + body)
        except OSError as e:  # disk full, file too large, I/O error
            raise OutputError(f"cannot write key file {self.path}: {e.strerror or e}") from None

    def _chained(self, kind: bytes, t: int, body: bytes) -> None:
        self._record(kind, body)
        c = self._chains.setdefault(t, [0, _chain_start(self.header_digest, t), False])
        c[0], c[1], self._dirty = c[0] + 1, _chain_next(c[1], body), True

    def append(self, rec: FaceRecord) -> None:
        t = int(rec.track_id)
        if t not in self._keys:
            self._keys[t] = AESGCM.generate_key(256)
            self._seq[t] = 0
            self._record(b"T", struct.pack("<I", t) + seal(self._keys[t], self.recipient, _aad(b"T", self.bound, t)))
        seq = self._seq[t]
        nonce = os.urandom(12)
        ct = AESGCM(self._keys[t]).encrypt(nonce, encode_payload(rec), _aad(b"F", self.bound, t, seq))
        self._chained(b"F", t, struct.pack("<II", t, seq) + nonce + ct)
        self._seq[t] = seq + 1
        if time.monotonic() - self._signed_at >= self.checkpoint_seconds:
            self.checkpoint()

    def checkpoint(self, final: bool = False, media: dict | None = None) -> None:
        """Sign everything written so far (a reader of a file cut short trusts records up to here)."""
        statement = {"v": 1, "header": self.header_digest.hex(), "final": final,
                     "tracks": {str(t): [c[0], c[1].hex(), c[2]] for t, c in sorted(self._chains.items())}}
        if media:
            statement["media"] = media
        body = json.dumps(statement, sort_keys=True).encode()
        self._record(b"S", sign(self.signer, body) + body)
        self._sync(fsync=False)
        self._signed_at, self._dirty = time.monotonic(), False

    def flush(self) -> None:
        if self._dirty:
            self.checkpoint()
        self._sync(fsync=False)

    def close(self, media: dict | None = None) -> None:
        """End every track, sign the whole file (with ``media``: what it belongs to) and close it."""
        if self._f.closed:
            return
        try:
            for t, key in self._keys.items():
                nonce = os.urandom(12)
                ct = AESGCM(key).encrypt(nonce, struct.pack("<I", self._seq[t]), _aad(b"E", self.bound, t))
                self._chained(b"E", t, struct.pack("<I", t) + nonce + ct)
                self._chains[t][2] = True
            self.checkpoint(final=True, media=media)
            self._sync(fsync=True)
        finally:
            self.abort()  # the filter side forgets the data keys: it cannot decrypt what it wrote

    def _sync(self, fsync: bool) -> None:
        try:
            self._f.flush()
            if fsync:
                os.fsync(self._f.fileno())
        except OSError as e:
            raise OutputError(f"cannot write key file {self.path}: {e.strerror or e}") from None

    def abort(self) -> None:
        """Close the file without signing its end (a failed run: the caller removes it)."""
        self._keys.clear()
        if not self._f.closed:
            try:
                self._f.close()
            except OSError:
                pass  # already failing: the first error is the one reported

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


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
        if chr(kind) not in "HTFESX":
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


class KeyReader:
    """Open a key file with the recipient's secret; ``records(tracks)`` yields decrypted :class:`FaceRecord`s.
    The file must be signed by one of ``trusted`` (Ed25519 public keys; default: this host's signer and the config
    folder's ``trusted/*.pub``); only records covered by a valid signature are read."""

    def __init__(self, path: str | Path, secret, partial: bool = False, trusted: list | None = None):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if os.fstat(f.fileno()).st_size else b""
        except (OSError, ValueError) as e:
            raise KeyError_(f"cannot read key file {path}: {e}") from None
        self.header, header_body, recs, self.truncated = read_raw(data)
        self.stream_id = bytes.fromhex(self.header["stream_id"])
        self.bound = binding(self.header)
        self.secret = secret
        self.partial = partial
        signer = bytes.fromhex(self.header["signer"])
        self.signer = signer.hex()
        trusted = default_trusted() if trusted is None else trusted
        if signer not in {raw(k) for k in trusted}:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

            fp = signer_fingerprint(Ed25519PublicKey.from_public_bytes(signer))
            raise KeyError_(f"key file {path} is signed by filter key {fp}, which is not trusted here (pass --trust "
                            "with that filter's signer.key.pub, or put it in the trusted/ folder)")
        self.export = None
        if recs and recs[0].kind == "X":
            try:
                self.export = json.loads(recs[0].body)
                int(self.export["exported_track"])
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                raise KeyError_("key file export note is damaged") from None
        self._recs, statement = self._verified(recs, signer, hashlib.sha256(header_body).digest())
        if statement is None:
            raise KeyError_(f"key file {path} is incomplete and holds no signed records (cut short before its first "
                            "signature)")
        listed = sorted(int(t) for t in statement["tracks"])
        if self.export is not None:
            listed = [t for t in listed if t == int(self.export["exported_track"])]
        self.tracks = listed
        sealed = {_track_of(r) for r in self._recs if r.kind == "T"}
        if set(listed) - sealed:
            raise KeyError_(f"track(s) {sorted(set(listed) - sealed)} were removed from the key file (file altered)")
        self.media = statement.get("media") or {}
        self.complete = not self.truncated and statement["final"] and self._unsigned == 0
        if not self.complete and not partial:
            raise KeyError_(f"key file {path} is incomplete (cut short{' mid-record' if self.truncated else ''}); "
                            "use --partial to read it up to its last signed record")
        self._data_keys: dict[int, bytes] = {}

    def _verified(self, recs: list[_Raw], signer: bytes, header_digest: bytes) -> tuple[list[_Raw], dict | None]:
        """The records up to the last valid statement, checking every statement against the records before it."""
        chains: dict[int, list] = {}
        upto, statement = 0, None
        only = int(self.export["exported_track"]) if self.export is not None else None
        for i, r in enumerate(recs):
            if r.kind in "FE":
                t = _track_of(r)
                c = chains.setdefault(t, [0, _chain_start(header_digest, t), False])
                c[0], c[1], c[2] = c[0] + 1, _chain_next(c[1], r.body), c[2] or r.kind == "E"
            elif r.kind == "S":
                sig, body = r.body[:_SIG], r.body[_SIG:]
                if len(sig) < _SIG or not verify(signer, sig, body):
                    raise KeyError_("key file signature does not verify (the file was altered or forged)")
                try:
                    st = json.loads(body)
                    claimed = {int(t): (int(v[0]), str(v[1]), bool(v[2])) for t, v in st["tracks"].items()}
                    ok_header = st["header"] == header_digest.hex()
                except (ValueError, KeyError, TypeError, IndexError):
                    raise KeyError_("key file statement is damaged") from None
                if not ok_header:
                    raise KeyError_("key file header was altered (it does not match the signed statement)")
                mine = {t: (c[0], c[1].hex(), c[2]) for t, c in chains.items()}
                if only is not None:
                    claimed = {t: v for t, v in claimed.items() if t == only}
                if mine != claimed:
                    raise KeyError_("key file records do not match the filter's signature (records or tracks were "
                                    "removed, added or altered)")
                upto, statement = i + 1, st
        self._unsigned = sum(r.kind in "FE" for r in recs[upto:])
        return [r for r in recs[:upto] if r.kind != "S"] + [r for r in recs[upto:] if r.kind == "T"], statement

    def _key(self, t: int) -> bytes:
        if t not in self._data_keys:
            blob = next((r.body[4:] for r in self._recs if r.kind == "T" and _track_of(r) == t), None)
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
            if r.kind == "F" and r.size >= 8 + 12 + 16:
                t, seq = struct.unpack_from("<II", r.buf, r.start)
                if t not in want:
                    continue
                if seq != seen[t]:
                    raise KeyError_(f"track {t}: record {seen[t]} is missing or out of order (file altered)")
                body = r.body
                try:
                    plain = AESGCM(self._key(t)).decrypt(body[8:20], body[20:], _aad(b"F", self.bound, t, seq))
                except InvalidTag:
                    raise KeyError_(f"track {t}: record {seq} failed authentication (the key file was altered)") from None
                seen[t] += 1
                try:
                    yield decode_payload(t, plain, self.header["shapes"])
                except (zlib.error, struct.error, ValueError) as e:
                    raise KeyError_(f"track {t}: record {seq} is malformed: {e}") from None
            elif r.kind == "F":
                raise KeyError_("key file is damaged (short face record)")
            elif r.kind == "E" and r.size >= 4 + 12 + 16:
                t, body = _track_of(r), r.body
                if t not in want:
                    continue
                try:
                    count = struct.unpack("<I", AESGCM(self._key(t)).decrypt(body[4:16], body[16:],
                                                                             _aad(b"E", self.bound, t)))[0]
                except InvalidTag:
                    raise KeyError_(f"track {t}: end record failed authentication (the key file was altered)") from None
                if count != seen[t]:
                    raise KeyError_(f"track {t}: {count - seen[t]} record(s) missing (the key file was altered)")
            elif r.kind == "E":
                raise KeyError_("key file is damaged (short end record)")

    def export_track(self, track: int, recipient, path: str | Path) -> None:
        """A new key file holding only ``track``, its data key re-sealed to ``recipient``: the filter's header and
        last signed statement travel unchanged, so the new reader can check the track against the filter's
        signature."""
        if track not in self.tracks:
            raise KeyError_(f"track {track} not in the key file (tracks: {self.tracks})")
        key = self._key(track)
        data = self.path.read_bytes()
        header, header_body, recs, _ = read_raw(data)
        last = max(i for i, r in enumerate(recs) if r.kind == "S")
        note = {"exported_track": track, "recipient": fingerprint(recipient), "exported_from": header.get("recipient")}
        out = io.BytesIO()
        out.write(MAGIC + bytes([VERSION]))
        parts = [("H", header_body), ("X", json.dumps(note, sort_keys=True).encode()),
                 ("T", struct.pack("<I", track) + seal(key, recipient, _aad(b"T", self.bound, track)))]
        parts += [(r.kind, r.body) for r in recs[:last] if r.kind in "FE" and _track_of(r) == track]
        parts.append(("S", recs[last].body))
        for kind, body in parts:
            out.write(_HEAD.pack(ord(kind), len(body)) + body)
        Path(path).write_bytes(out.getvalue())
