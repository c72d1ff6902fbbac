"""Writing a key file as faces come: per-track data keys sealed to the recipient, records encrypted, signed
statements every few seconds and on close (the format: ``keyfile.py``). A video's records are held for a group of
frames (``video.GROUP``): each track's faithful face regions are then coded as one H.264 chunk, written before the
group's face records (in frame order)."""
from __future__ import annotations

import hashlib
import json
import os
import struct
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import OutputError
from . import keyfile
from .crypto import fingerprint, seal
from .keyfile import _HEAD, MAGIC, VERSION, FaceRecord, _aad, _chain_next, _chain_start, binding
from .signing import host_signer, raw, sign
from .video import GROUP, InChunk, encode_chunk


class KeyWriter:
    """Append face records as they come; each track gets its own data key, sealed to the recipient. Every
    ``checkpoint_seconds`` (and on close) the records so far are signed with ``signer`` (default: this host's).
    ``video`` (default: when ``info`` says the media is a video): faithful face regions go into per-track H.264
    chunks of ``GROUP`` frames instead of a JPEG each."""

    def __init__(self, path: str | Path, recipient, shapes: dict, info: dict | None = None,
                 stream_id: bytes | None = None, signer=None, checkpoint_seconds: float = 2.0,
                 video: bool | None = None):
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
        self.video = (info or {}).get("media") == "video" if video is None else video
        self._pending: list[FaceRecord] = []  # this group's records (video)
        self._group = None
        self._vseq: dict[int, int] = {}
        self._crf: dict[int, int] = {}  # track -> its last chunk's place in video.CRFS (the next search starts there)
        self._marks: dict[int, list] = {}  # track -> marks not yet signed (where each group of frames starts)
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

    def _track(self, t: int) -> bytes:
        if t not in self._keys:
            self._keys[t] = AESGCM.generate_key(256)
            self._seq[t], self._vseq[t] = 0, 0
            self._record(b"T", struct.pack("<I", t) + seal(self._keys[t], self.recipient, _aad(b"T", self.bound, t)))
        return self._keys[t]

    def append(self, rec: FaceRecord) -> None:
        if not self.video:
            return self._write(rec)
        group = int(rec.frame_index) // GROUP
        if self._pending and group != self._group:
            self._flush_group()
        self._group = group
        self._pending.append(rec)

    def _flush_group(self) -> None:
        """Each track's faithful regions of the group as one chunk, then the group's records in frame order."""
        faithful: dict[int, list[int]] = {}
        for i, r in enumerate(self._pending):
            if r.key is not None and r.exact is not None and r.quality and isinstance(r.exact[1], np.ndarray):
                faithful.setdefault(int(r.track_id), []).append(i)
        recs = list(self._pending)
        for t in sorted({int(r.track_id) for r in recs}):  # each track's chain where this group starts: a time
            self._track(t)  # range of the track can be exported and checked against the signature on its own
            c = self._chains.get(t, [0, _chain_start(self.header_digest, t)])
            self._marks.setdefault(t, []).append([c[0], c[1].hex(), self._group * GROUP, self._seq[t], self._vseq[t]])
        for t, idx in faithful.items():
            data, self._crf[t] = encode_chunk([recs[i].exact[1] for i in idx], recs[idx[0]].quality,
                                              self._crf.get(t, 1))
            key, seq, nonce = self._track(t), self._vseq[t], os.urandom(12)
            ct = AESGCM(key).encrypt(nonce, data, _aad(b"V", self.bound, t, seq))
            self._chained(b"V", t, struct.pack("<II", t, seq) + nonce + ct)
            self._vseq[t] = seq + 1
            for n, i in enumerate(idx):
                recs[i] = replace(recs[i], key=None, exact=(recs[i].exact[0], InChunk(n)))
        self._pending.clear()
        for r in sorted(recs, key=lambda r: r.frame_index):  # (stable: a frame's records keep their order)
            self._write(r)

    def _write(self, rec: FaceRecord) -> None:
        t = int(rec.track_id)
        self._track(t)
        seq = self._seq[t]
        nonce = os.urandom(12)
        ct = AESGCM(self._keys[t]).encrypt(nonce, keyfile.encode_payload(rec), _aad(b"F", self.bound, t, seq))
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
        if self._marks:  # [records before, chain there, first frame, face records before, chunks before]
            statement["marks"] = {str(t): m for t, m in sorted(self._marks.items())}
            self._marks = {}
        body = json.dumps(statement, sort_keys=True).encode()
        self._record(b"S", sign(self.signer, body) + body)
        self._sync(fsync=False)
        self._signed_at, self._dirty = time.monotonic(), False

    def flush(self) -> None:
        if self._dirty:
            self.checkpoint()
        self._sync(fsync=False)

    def close(self, media: dict | None = None, frames: int | None = None) -> None:
        """End every track, sign the whole file (with ``media``: what it belongs to) and close it. ``frames``: the
        output holds only this many frames (a run stopped mid-frame): records of later frames, still held with
        their group, are left out."""
        if self._f.closed:
            return
        try:
            if frames is not None:
                self._pending = [r for r in self._pending if r.frame_index < frames]
            if self._pending:
                self._flush_group()
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
