import json
import os
import stat
import struct
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from difp_stream.cli import main
from difp_stream.difp import FaceKey
from difp_stream.keys import FaceRecord, KeyError_, KeyReader, KeyWriter, generate, load_public, load_secret
from difp_stream.keys.keyfile import read_raw
from difp_stream.keys.video import GROUP, InChunk, target_db
from difp_stream.metrics import psnr as _psnr
from difp_stream.video.synthetic import make_clip

SHAPES = {"z_ts": [4, 16, 16], "correction": [4, 16, 16], "id_code": [128], "style": [2, 32]}


def _record(track, frame, seed, exact=False):
    r = np.random.default_rng(seed)
    h = lambda *s: r.normal(size=s).astype(np.float16)  # noqa: E731
    key = FaceKey(h(4, 16, 16), h(4, 16, 16), h(128), h(2, 32), 4, 0.8)
    ex = ((10, 20, 30, 44), r.integers(0, 256, (24, 20, 3), dtype=np.uint8)) if exact else None
    return FaceRecord(track, frame, r.normal(size=(2, 3)).astype(np.float32), key, ex)


@pytest.fixture
def pair(tmp_path):
    s, p = generate(tmp_path / "id.key")
    return load_secret(s), load_public(p), s, p


@pytest.fixture
def keyfile(tmp_path, pair):
    path = tmp_path / "k.difpkeys"
    recs = [_record(t, f, 10 * f + t, exact=(f == 2)) for f in range(4) for t in (0, 1)]
    with KeyWriter(path, pair[1], SHAPES, {"model": "m"}, checkpoint_seconds=0) as w:  # signed after each record
        for r in recs:
            w.append(r)
    return path, recs


def _moving_faces(frames: int):
    """Two tracks of face regions (the astronaut's face sliding and growing), as faithful records of a video."""
    from difp_stream.video.synthetic import astronaut

    img, out = astronaut(), []
    for f in range(frames):
        for t in (0, 1):
            x0, y0 = 120 + f + 40 * t, 60 + f // 2
            box = (x0, y0, x0 + 150 + f % 5, y0 + 170)
            rec = _record(t, f, f)
            out.append(FaceRecord(t, f, rec.transform, rec.key, (box, img[y0:box[3], x0:box[2]].copy()), 75))
    return out


def test_faithful_regions_of_a_video_are_coded_as_one_stream_per_track_and_group(tmp_path, pair):
    """A video's faithful face regions: one H.264 chunk per track and 30 frames, at the quality's PSNR, several
    times smaller than a JPEG each; records in frame order; a track exported with its chunks; format 2 files read."""
    recs = _moving_faces(70)
    sizes = {}
    for video in (True, False):
        path = tmp_path / f"k{video}.difpkeys"
        with KeyWriter(path, pair[1], SHAPES, {"model": "m", "media": "video" if video else "image"}) as w:
            for r in recs:
                w.append(r)
        sizes[video] = path.stat().st_size
    path = tmp_path / "kTrue.difpkeys"
    kinds = [r.kind for r in read_raw(path.read_bytes())[2]]
    assert kinds.count("V") == 2 * -(-70 // GROUP)  # per track: frames 0-29, 30-59, 60-69
    got = list(KeyReader(path, pair[0]).records())
    assert [(r.frame_index, r.track_id) for r in got] == [(r.frame_index, r.track_id) for r in recs]
    assert all(isinstance(r.exact[1], InChunk) and r.key is None and not r.covered for r in got)
    ps = [_psnr(a.exact[1], b.exact_pixels()) for a, b in zip(recs, got)]
    assert np.mean(ps) >= target_db(75) and min(ps) > 36
    assert sizes[True] < sizes[False] / 3  # one JPEG (quality 75) per face-frame, and the diffusion arrays
    KeyReader(path, pair[0]).export_track(1, pair[1], tmp_path / "t1.difpkeys")
    one = list(KeyReader(tmp_path / "t1.difpkeys", pair[0]).records())
    assert [r.frame_index for r in one] == list(range(70))
    assert np.array_equal(one[40].exact_pixels(), got[81].exact_pixels())
    old = tmp_path / "v2.difpkeys"  # a format 2 file (no video records)
    data = bytearray((tmp_path / "kFalse.difpkeys").read_bytes())
    data[7] = 2
    old.write_bytes(bytes(data))
    assert len(list(KeyReader(old, pair[0]).records())) == len(recs)


def test_a_time_range_of_one_track_is_exported_and_still_checked_against_the_filters_signature(tmp_path, pair):
    """`keys export --from-frame --to-frame`: the groups of 30 frames that cover the range, verifiable on their own;
    a range moved off the signed marks, or a record taken out of it, is refused."""
    path = tmp_path / "k.difpkeys"
    with KeyWriter(path, pair[1], SHAPES, {"model": "m", "media": "video"}, checkpoint_seconds=0) as w:
        for r in _moving_faces(100):
            w.append(r)
    full = {(r.track_id, r.frame_index): r.exact_pixels() for r in KeyReader(path, pair[0]).records()}
    s2, p2 = generate(tmp_path / "court.key")
    out = tmp_path / "t1_40_70.difpkeys"
    assert main(["keys", "export", str(path), "--identity", str(tmp_path / "id.key"), "--export-track", "1",
                 "--to", str(p2), "--out", str(out), "--from-frame", "40", "--to-frame", "70"]) == 0
    r = KeyReader(out, load_secret(s2))
    got = list(r.records())
    assert r.tracks == [1] and [x.frame_index for x in got] == list(range(30, 90))
    assert all(np.array_equal(x.exact_pixels(), full[(1, x.frame_index)]) for x in got)
    to_end = tmp_path / "t0_end.difpkeys"
    assert KeyReader(path, pair[0]).export_track(0, load_public(p2), to_end, (65, 2 ** 31)) == (60, None)
    assert [x.frame_index for x in KeyReader(to_end, load_secret(s2)).records()] == list(range(60, 100))
    with pytest.raises(KeyError_, match="export already"):
        KeyReader(out, load_secret(s2)).export_track(1, load_public(p2), tmp_path / "again", (0, 10))
    header, _, recs, _ = read_raw(out.read_bytes())
    data = out.read_bytes()
    x = next(q for q in recs if q.kind == "X")
    note = json.loads(x.body)
    note["range"]["from"][0] += 1  # a start the filter never signed
    moved = data[:x.start - 5] + struct.pack("<BI", ord("X"), len(json.dumps(note))) + json.dumps(note).encode() \
        + data[x.start + x.size:]
    f = next(q for q in recs if q.kind == "F")
    dropped = data[:f.start - 5] + data[f.start + f.size:]
    for i, bad in enumerate((moved, dropped)):
        (tmp_path / f"bad{i}").write_bytes(bad)
        with pytest.raises(KeyError_, match="signed|signature"):
            list(KeyReader(tmp_path / f"bad{i}", load_secret(s2)).records())


def test_an_altered_or_removed_video_chunk_is_refused(tmp_path, pair):
    path = tmp_path / "k.difpkeys"
    with KeyWriter(path, pair[1], SHAPES, {"model": "m", "media": "video"}) as w:
        for r in _moving_faces(35):
            w.append(r)
    data = path.read_bytes()
    v = next(r for r in read_raw(data)[2] if r.kind == "V")
    flipped = bytearray(data)
    flipped[v.start + v.size // 2] ^= 1
    cut = data[:v.start - 5] + data[v.start + v.size:]  # the chunk and its record head gone
    for i, bad in enumerate((bytes(flipped), cut)):
        (tmp_path / f"bad{i}").write_bytes(bad)
        with pytest.raises(KeyError_, match="signature|altered"):
            list(KeyReader(tmp_path / f"bad{i}", pair[0]).records())


def test_keygen_writes_a_private_secret_and_a_public_key(tmp_path):
    s, p = generate(tmp_path / "a.key")
    assert stat.S_IMODE(os.stat(s).st_mode) == 0o600
    assert p.name == "a.key.pub" and b"PUBLIC KEY" in p.read_bytes()
    s2, _ = generate(tmp_path / "b.key", passphrase=b"hunter2")
    with pytest.raises(KeyError_, match="passphrase"):
        load_secret(s2)
    load_secret(s2, b"hunter2")
    assert main(["keygen", str(tmp_path / "a.key")]) == 4  # never replaces a key


def test_round_trip_and_track_selection(keyfile, pair):
    path, recs = keyfile
    r = KeyReader(path, pair[0])
    assert r.complete and r.tracks == [0, 1]
    got = list(r.records())
    assert len(got) == len(recs)
    for a, b in zip(got, recs):
        assert (a.track_id, a.frame_index) == (b.track_id, b.frame_index)
        assert np.array_equal(a.key.z_ts, b.key.z_ts) and np.array_equal(a.key.style, b.key.style)
        assert np.allclose(a.transform, b.transform)
        assert (a.exact is None) == (b.exact is None)
        if a.exact:
            assert a.exact[0] == b.exact[0] and np.array_equal(a.exact_pixels(), b.exact[1])
    only1 = list(KeyReader(path, pair[0]).records([1]))
    assert {x.track_id for x in only1} == {1} and len(only1) == 4
    with pytest.raises(KeyError_, match="not in the key file"):
        list(KeyReader(path, pair[0]).records([7]))


def test_nothing_sensitive_is_plaintext(keyfile):
    path, recs = keyfile
    data = path.read_bytes()
    for r in recs:
        for a in (r.key.z_ts, r.key.correction, r.key.id_code):
            assert a.tobytes()[:32] not in data
    assert b"z_ts" in data  # the header (shapes) is plaintext, the content is not


def test_wrong_secret_is_refused(keyfile, tmp_path):
    other = load_secret(generate(tmp_path / "other.key")[0])
    with pytest.raises(KeyError_, match="wrong secret"):
        list(KeyReader(keyfile[0], other).records())


def test_truncated_file_needs_partial_and_reads_up_to_last_complete_record(keyfile, pair, tmp_path):
    data = keyfile[0].read_bytes()
    cut = tmp_path / "cut.difpkeys"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(KeyError_, match="incomplete"):
        KeyReader(cut, pair[0])
    got = list(KeyReader(cut, pair[0], partial=True).records())
    assert 0 < len(got) < 8


def test_flipped_bytes_are_detected(keyfile, pair, tmp_path):
    data = bytearray(keyfile[0].read_bytes())
    hpos = 8 + 5 + struct.unpack_from("<I", data, 9)[0]  # first byte after the header
    for pos in range(hpos, len(data), 37):
        bad = bytearray(data)
        bad[pos] ^= 0x40
        p = tmp_path / "bad.difpkeys"
        p.write_bytes(bytes(bad))
        with pytest.raises(KeyError_):
            list(KeyReader(p, pair[0]).records())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzz_reader_never_crashes(keyfile, pair, tmp_path, data):
    raw = bytearray(keyfile[0].read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, len(raw) - 1))
        if op == "flip":
            raw[pos] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            raw = raw[:pos]
        else:
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
        if not raw:
            raw = bytearray(b"x")
    p = tmp_path / "fuzz.difpkeys"
    p.write_bytes(bytes(raw))
    try:
        list(KeyReader(p, pair[0], partial=data.draw(st.booleans())).records())
    except KeyError_:
        pass


def test_export_track_reseals_one_track(keyfile, pair, tmp_path):
    bob_secret, bob_pub = generate(tmp_path / "bob.key")
    out = tmp_path / "track1.difpkeys"
    KeyReader(keyfile[0], pair[0]).export_track(1, load_public(bob_pub), out)
    r = KeyReader(out, load_secret(bob_secret))
    assert r.tracks == [1] and r.complete
    assert len(list(r.records())) == 4
    with pytest.raises(KeyError_):  # the original recipient's secret does not open Bob's copy
        list(KeyReader(out, pair[0]).records())


# ------------------------------------------------------------------------------------------ CLI round trips
@pytest.fixture(scope="module")
def two_face_clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("two") / "two.mp4", frames=10, size=(480, 240), two=True)


def _frames(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24").astype(np.float64) for f in c.decode(video=0)]




@pytest.mark.parametrize("mode,floor", [("exact", 45), ("faithful", 33)])
def test_protect_then_recover_one_track_with_pixels(tmp_path, two_face_clip, model_dir, pair, mode, floor):
    """exact (a PNG) and faithful (the default: the track's face regions as video) keys bring one person's face region back, not the other's."""
    _, _, secret, pub = pair
    out = tmp_path / "out.mp4"
    assert main([str(two_face_clip), str(out), "--model", str(model_dir), "--recipient", str(pub),
                 *(["--recovery", mode] if mode != "faithful" else []), "--no-progress"]) == 0
    keys = Path(str(out) + ".difpkeys")
    assert keys.exists() and not (tmp_path / "out.mp4.difpkeys.secret").exists()
    reader = KeyReader(keys, load_secret(secret))
    assert reader.tracks == [0, 1]
    first = next(reader.records([0]))
    x0, y0, x1, y1 = first.exact[0]
    if mode == "exact":
        assert bytes(first.exact[1][:3]) == b"\x89PN"  # a PNG per face-frame
    else:  # faithful: a frame of the track's H.264 chunk
        assert isinstance(first.exact[1], InChunk) and first.exact_pixels().shape == (y1 - y0, x1 - x0, 3)
    rec = tmp_path / "rec.mp4"
    assert main(["recover", str(out), str(rec), "--keys", str(keys), "--identity", str(secret), "--track", "0",
                 "--model", str(model_dir), "--no-progress"]) == 0
    orig, prot, back = _frames(two_face_clip), _frames(out), _frames(rec)
    assert len(orig) == len(back) == 10
    # track 0's face region comes back (exact mode: up to codec rounding) ...
    assert np.mean([_psnr(o[y0:y1, x0:x1], b[y0:y1, x0:x1]) for o, b in zip(orig[:1], back[:1])]) >= floor
    # ... and the other person stays protected
    tr1 = next(reader.records([1]))
    a0, b0, a1, b1 = tr1.exact[0]
    assert _psnr(prot[0][b0:b1, a0:a1], back[0][b0:b1, a0:a1]) > 38
    assert _psnr(orig[0][b0:b1, a0:a1], back[0][b0:b1, a0:a1]) < 30
    log = Path(str(keys) + ".audit.log").read_text()
    assert '"tracks": [0]' in log and '"action": "recover"' in log


def test_recover_errors_are_clear(tmp_path, two_face_clip, model_dir, pair, capsys):
    _, _, secret, pub = pair
    out, other = tmp_path / "out.mp4", tmp_path / "other.mp4"
    for o, seed in ((out, "0"), (other, "1")):  # (the same seed gives the same video packets: the same content)
        assert main([str(two_face_clip), str(o), "--model", str(model_dir), "--recipient", str(pub),
                     "--seed", seed, "--no-progress"]) == 0
    keys = str(out) + ".difpkeys"
    wrong = generate(tmp_path / "wrong.key")[0]
    base = ["--model", str(model_dir), "--no-progress"]
    assert main(["recover", str(out), str(tmp_path / "r1.mp4"), "--keys", keys, "--identity", str(wrong)] + base) == 5
    assert "wrong secret" in capsys.readouterr().err
    assert main(["recover", str(other), str(tmp_path / "r2.mp4"), "--keys", keys, "--identity", str(secret)] + base) == 5
    assert "another video" in capsys.readouterr().err
    bad = tmp_path / "bad.difpkeys"
    data = bytearray(Path(keys).read_bytes())
    data[len(data) // 2] ^= 1
    bad.write_bytes(bytes(data))
    assert main(["recover", str(out), str(tmp_path / "r3.mp4"), "--keys", str(bad), "--identity", str(secret)] + base) == 5
    assert "altered" in capsys.readouterr().err or "damaged" in capsys.readouterr().err
    cut = tmp_path / "cut.difpkeys"
    cut.write_bytes(Path(keys).read_bytes()[:-10])
    assert main(["recover", str(out), str(tmp_path / "r4.mp4"), "--keys", str(cut), "--identity", str(secret)] + base) == 5
    assert "incomplete" in capsys.readouterr().err
    assert not any((tmp_path / f"r{i}.mp4").exists() for i in range(1, 5))  # never a garbage video
    assert main(["keys", "list", keys, "--identity", str(secret)]) == 0
    listing = capsys.readouterr().out
    assert "complete" in listing and "    0     10        0      0     9" in listing


def test_default_makes_a_key_pair_loudly(tmp_path, two_face_clip, model_dir, capsys):
    out = tmp_path / "o.mp4"
    assert main([str(two_face_clip), str(out), "--model", str(model_dir), "--no-progress"]) == 0
    secret = tmp_path / "o.mp4.difpkeys.secret"
    assert secret.exists() and stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    assert "SECRET" in capsys.readouterr().err
    assert KeyReader(tmp_path / "o.mp4.difpkeys", load_secret(secret)).tracks == [0, 1]


def test_header_tampering_is_detected(keyfile, pair, tmp_path):
    data = keyfile[0].read_bytes()
    assert b'"model": "m"' in data
    p = tmp_path / "h.difpkeys"
    p.write_bytes(data.replace(b'"model": "m"', b'"model": "n"'))
    with pytest.raises(KeyError_):
        list(KeyReader(p, pair[0]).records())


def test_keys_at_a_higher_resolution_restore_the_face_in_place(tmp_path, two_face_clip, model_dir, pair):
    """--key-resolution 64 with a 32 px model: the header announces the larger correction, and `recover` pastes the
    64 px crops exactly where the faces were (nothing outside the faces' regions changes)."""
    from difp_stream.faces.align import roi_of

    _, _, secret, pub = pair
    out, rec = tmp_path / "out.mp4", tmp_path / "rec.mp4"
    assert main([str(two_face_clip), str(out), "--model", str(model_dir), "--recipient", str(pub),
                 "--key-resolution", "64", "--no-progress"]) == 0
    reader = KeyReader(Path(str(out) + ".difpkeys"), load_secret(secret))
    assert reader.header["shapes"]["correction"] == [4, 32, 32] and reader.header["shapes"]["z_ts"] == [4, 16, 16]
    assert main(["recover", str(out), str(rec), "--keys", str(out) + ".difpkeys", "--identity", str(secret),
                 "--model", str(model_dir), "--no-progress"]) == 0
    prot, back = _frames(out), _frames(rec)
    r = next(reader.records())
    inside = np.zeros(prot[0].shape[:2], bool)
    for q in (x for x in reader.records() if x.frame_index == r.frame_index):
        x0, y0, x1, y1 = roi_of(q.transform, 32, inside.shape)
        inside[y0:y1, x0:x1] = True
    diff = np.abs(prot[r.frame_index] - back[r.frame_index]).mean(axis=2)
    assert diff[~inside].mean() < 1.5 and diff[inside].mean() > 5
    with pytest.raises(SystemExit) as e:
        main([str(two_face_clip), str(tmp_path / "x.mp4"), "--model", str(model_dir), "--key-resolution", "48"])
    assert e.value.code == 2


@pytest.mark.slow
def test_default_faithful_keys_restore_the_face_in_the_frame_above_35_db(tmp_path):
    """The auditor's view (bench/recovery.py's round trip: protect with a recipient, `recover`, the face region
    against the original decoded frame) with the shipped model: the default (faithful) keys bring the face back
    above 35 dB and re-identified; the diffusion key alone restores the model's reconstruction, another person's
    face, in a smaller file."""
    from difp_stream.app.bench_recovery import round_trip

    clip = make_clip(tmp_path / "g.mp4", frames=6, size=(640, 480), fps=25)
    secret, pub = generate(tmp_path / "auditor.key")
    faithful = round_trip(clip, tmp_path, "faithful (default)", secret, pub, main)
    compact = round_trip(clip, tmp_path, "diffusion", secret, pub, main)
    assert faithful["faces"] == compact["faces"] >= 4
    assert faithful["recovered_psnr_db"] >= 35 > 25 > compact["recovered_psnr_db"]
    assert faithful["reidentified"] == 1.0
    assert faithful["key_kb_per_face_second"] > compact["key_kb_per_face_second"]
