"""Reading a key file: the signer checked against the trusted ones, every statement against the records before it,
then the records decrypted for the tracks asked for; and re-sealing one track for another recipient (export)."""
from __future__ import annotations

import hashlib
import io
import json
import mmap
import os
import struct
import zlib
from pathlib import Path
from typing import Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .crypto import KeyError_, fingerprint, seal, unseal
from .keyfile import (_HEAD, _SIG, MAGIC, FaceRecord, _aad, _chain_next, _chain_start, _Raw, _track_of,
                      binding, decode_payload, read_raw)
from .signing import default_trusted, raw, signer_fingerprint, verify
from .video import InChunk, VideoChunk


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
        self._start: dict[int, tuple] = {}
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
        span = (self.export or {}).get("range")
        if span is not None:
            return self._verified_range(recs, signer, header_digest, only, span)
        history: dict[int, list] = {}  # track -> its chain after each record (marks are checked against it)
        self.marks: dict[int, list] = {}
        for i, r in enumerate(recs):
            if r.kind in "FEV":
                t = _track_of(r)
                c = chains.setdefault(t, [0, _chain_start(header_digest, t), False])
                history.setdefault(t, [c[1]])
                c[0], c[1], c[2] = c[0] + 1, _chain_next(c[1], r.body), c[2] or r.kind == "E"
                history[t].append(c[1])
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
                self._marks_of(st, history, header_digest, only)
                upto, statement = i + 1, st
        self._unsigned = sum(r.kind in "FEV" for r in recs[upto:])
        return [r for r in recs[:upto] if r.kind != "S"] + [r for r in recs[upto:] if r.kind == "T"], statement

    def _marks_of(self, st: dict, history: dict, header_digest: bytes, only: int | None) -> None:
        """A statement's marks (where groups of frames start), each checked against the chain it names (an
        export's: its own track's only)."""
        try:
            for t, ms in (st.get("marks") or {}).items():
                t = int(t)
                if only is not None and t != only:
                    continue
                for n, chain, frame, fseq, vseq in ms:
                    h = history.get(t, [_chain_start(header_digest, t)])
                    if not (0 <= int(n) < len(h)) or h[int(n)].hex() != chain:
                        raise KeyError_("key file marks do not match its records (the file was altered)")
                    self.marks.setdefault(t, []).append((int(n), chain, int(frame), int(fseq), int(vseq)))
        except (TypeError, ValueError, AttributeError):
            raise KeyError_("key file statement is damaged") from None

    def _verified_range(self, recs, signer: bytes, header_digest: bytes, t: int, span: dict):
        """An export of a time range of track ``t``: its records are chained from a signed mark to the next signed
        mark (or to the track's end, as the last statement signs it)."""
        sigs = []
        for r in recs:
            if r.kind == "S":
                sig, body = r.body[:_SIG], r.body[_SIG:]
                if len(sig) < _SIG or not verify(signer, sig, body):
                    raise KeyError_("key file signature does not verify (the file was altered or forged)")
                try:
                    sigs.append(json.loads(body))
                except ValueError:
                    raise KeyError_("key file statement is damaged") from None
        if not sigs or any(s.get("header") != header_digest.hex() for s in sigs):
            raise KeyError_("key file header was altered (it does not match the signed statement)")
        signed = {tuple(m[:2]) for s in sigs for m in (s.get("marks") or {}).get(str(t), [])}
        start, end = span.get("from"), span.get("to")
        try:
            n, chain = int(start[0]), bytes.fromhex(start[1])
            if (n, start[1]) not in signed or (end is not None and (int(end[0]), end[1]) not in signed):
                raise KeyError_("the exported time range does not start and end where the filter signed")
        except (TypeError, ValueError, IndexError):
            raise KeyError_("key file export note is damaged") from None
        ended = False
        for r in recs:
            if r.kind in "FEV":
                if _track_of(r) != t:
                    raise KeyError_("key file export holds another track's records (file altered)")
                n, chain, ended = n + 1, _chain_next(chain, r.body), ended or r.kind == "E"
        last = sigs[-1]
        claim = (last.get("tracks") or {}).get(str(t))
        ok = (int(end[0]), end[1]) == (n, chain.hex()) if end is not None else (
            claim is not None and (int(claim[0]), str(claim[1]), bool(claim[2])) == (n, chain.hex(), ended))
        if not ok:
            raise KeyError_("key file records do not match the filter's signature (records were removed, added or "
                            "altered)")
        self._unsigned, self.marks = 0, {}
        self._start = {t: (int(start[3]), int(start[4]))}
        return [r for r in recs if r.kind != "S"], last

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
        first = self._start  # (a time range's first face record and chunk numbers)
        seen: dict[int, int] = {t: first.get(t, (0, 0))[0] for t in want}
        chunks: dict[int, list] = {t: [first.get(t, (0, 0))[1], None] for t in want}  # [chunks seen, current one]
        for r in self._recs:
            if r.kind == "V" and r.size >= 8 + 12 + 16:
                t, seq = struct.unpack_from("<II", r.buf, r.start)
                if t in want:
                    chunks[t] = [seq + 1, self._chunk(t, seq, chunks[t][0], r.body)]
            elif r.kind == "V":
                raise KeyError_("key file is damaged (short video record)")
            elif r.kind == "F" and r.size >= 8 + 12 + 16:
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
                    rec = decode_payload(t, plain, self.header["shapes"])
                except (zlib.error, struct.error, ValueError) as e:
                    raise KeyError_(f"track {t}: record {seq} is malformed: {e}") from None
                if rec.exact is not None and isinstance(rec.exact[1], InChunk):
                    rec.exact[1].chunk = chunks[t][1]
                yield rec
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

    def _chunk(self, t: int, seq: int, expected: int, body: bytes) -> VideoChunk:
        if seq != expected:
            raise KeyError_(f"track {t}: video chunk {expected} is missing or out of order (file altered)")
        try:
            return VideoChunk(AESGCM(self._key(t)).decrypt(body[8:20], body[20:], _aad(b"V", self.bound, t, seq)))
        except InvalidTag:
            raise KeyError_(f"track {t}: video chunk {seq} failed authentication (the key file was altered)") from None

    def export_track(self, track: int, recipient, path: str | Path, frames: tuple | None = None) -> tuple:
        """A new key file holding only ``track`` (``frames``: only the groups of 30 frames that cover [first, last)
        of it), its data key re-sealed to ``recipient``: the filter's header and signed statements travel unchanged,
        so the new reader can check the track against the filter's signature. Returns the frames it covers."""
        if track not in self.tracks:
            raise KeyError_(f"track {track} not in the key file (tracks: {self.tracks})")
        if self.export is not None:
            raise KeyError_("this key file is an export already: export from the filter's own key file")
        key = self._key(track)
        data = self.path.read_bytes()
        header, header_body, recs, _ = read_raw(data)
        last = max(i for i, r in enumerate(recs) if r.kind == "S")
        note = {"exported_track": track, "recipient": fingerprint(recipient), "exported_from": header.get("recipient")}
        mine = [r for r in recs[:last] if r.kind in "FEV" and _track_of(r) == track]
        covered = (None, None)
        if frames is not None:
            mine, note["range"], covered = self._range(track, mine, frames)
        out = io.BytesIO()
        out.write(MAGIC + bytes([data[7]]))  # (the filter's version: its header and statement travel unchanged)
        parts = [("H", header_body), ("X", json.dumps(note, sort_keys=True).encode()),
                 ("T", struct.pack("<I", track) + seal(key, recipient, _aad(b"T", self.bound, track)))]
        parts += [(r.kind, r.body) for r in mine]
        parts += [("S", r.body) for r in recs[:last] if r.kind == "S" and frames is not None]
        parts.append(("S", recs[last].body))
        for kind, body in parts:
            out.write(_HEAD.pack(ord(kind), len(body)) + body)
        path = Path(path)
        tmp = path.with_name(f".{path.name}.partial")  # nothing half-written under the final name
        try:
            tmp.write_bytes(out.getvalue())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return covered

    def _range(self, track: int, mine: list, frames: tuple) -> tuple[list, dict, tuple]:
        """The track's records from the last signed mark at or before ``frames[0]`` to the first at or after
        ``frames[1]`` (or its end), and the export note's range."""
        marks = sorted(self.marks.get(track, []))
        if not marks:
            raise KeyError_(f"track {track} has no signed time marks (an image's key file, or one written before "
                            "format 3): export the whole track")
        lo, hi = int(frames[0]), int(frames[1])
        start = max((m for m in marks if m[2] <= lo), default=marks[0])
        end = min((m for m in marks if m[2] >= hi and m[0] > start[0]), default=None)
        upto = end[0] if end is not None else len(mine)
        covered = (start[2], end[2] if end is not None else None)
        return mine[start[0]:upto], {"from": list(start), "to": None if end is None else list(end),
                                     "frames": list(covered)}, covered
