"""The right cover for every face (#26): blurred faces are recoverable, and the blur is bounded by the face."""
from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from difp_stream.keys import KeyError_, KeyReader, load_secret
from difp_stream.video.synthetic import astronaut


def _two_faces() -> np.ndarray:
    """The astronaut, and a second copy of her face cut in half by the picture's right edge (a cut face: blurred)."""
    img = astronaut()
    face = img[40:200, 160:290]
    canvas = np.concatenate([img, img[:, 300:500]], 1).copy()
    x = canvas.shape[1] - face.shape[1] // 2
    canvas[300:460, x:] = face[:, :canvas.shape[1] - x]
    return canvas


@pytest.fixture(scope="module")
def protected(tmp_path_factory):
    from difp_stream.cli import main

    d = tmp_path_factory.mktemp("cover")
    src, out = d / "two.png", d / "out.png"
    cv2.imwrite(str(src), _two_faces()[:, :, ::-1])
    assert main([str(src), str(out)]) == 0
    return d, src, out, str(out) + ".difpkeys", str(out) + ".difpkeys.secret"


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255 ** 2 / max(np.mean((a.astype(float) - b.astype(float)) ** 2), 1e-9)))


def test_a_picture_with_one_replaced_and_one_blurred_face_recovers_whole(protected, capsys):
    from difp_stream.cli import main

    d, src, out, keys, secret = protected
    img, prot = (cv2.imread(str(p))[:, :, ::-1] for p in (src, out))
    recs = list(KeyReader(keys, load_secret(secret)).records())
    assert sorted(r.covered for r in recs) == [False, True]  # one replaced, one blurred: both in the key file
    cover = next(r for r in recs if r.covered)
    x0, y0, x1, y1 = cover.exact[0]
    assert x1 == img.shape[1] and 290 <= y0 < y1 <= 470  # the cut face's region, at the right edge
    assert _psnr(prot[y0:y1, x0:x1], img[y0:y1, x0:x1]) < 25  # blurred there
    assert main(["keys", "list", keys, "--identity", secret]) == 0
    assert "faces the filter blurred" in capsys.readouterr().out
    back = d / "back.png"
    assert main(["recover", str(out), str(back), "--keys", keys, "--identity", secret]) == 0
    restored = cv2.imread(str(back))[:, :, ::-1]
    assert _psnr(restored, img) >= 38  # the whole picture, both faces
    assert _psnr(restored[y0:y1, x0:x1], img[y0:y1, x0:x1]) >= 35  # the blurred face itself, no seam left


def test_a_blurred_face_record_is_sealed_and_signed_like_the_others(protected, tmp_path):
    d, src, out, keys, secret = protected
    data = bytearray(open(keys, "rb").read())
    img = cv2.imread(str(src))
    cover = next(r for r in KeyReader(keys, load_secret(secret)).records() if r.covered)
    x0, y0, x1, y1 = cover.exact[0]
    assert bytes(img[y0 + 5, x0:x1].tobytes()[:24]) not in data  # the region's pixels are not in the clear
    assert bytes(cover.exact[1][:64]) not in data  # nor its JPEG
    # flip one byte inside each face record's ciphertext in turn: the reader refuses every one, the cover's too
    pos, found = 8, 0
    while pos < len(data):
        kind, n = struct.unpack_from("<BI", data, pos)
        if chr(kind) == "F":
            bad = bytearray(data)
            bad[pos + 5 + n - 3] ^= 1
            p = tmp_path / f"bad{found}.difpkeys"
            p.write_bytes(bytes(bad))
            with pytest.raises(KeyError_, match="authentication|signature|do not match"):
                list(KeyReader(p, load_secret(secret)).records())
            found += 1
        pos += 5 + n
    assert found == 2


def test_the_blur_region_is_bounded_by_the_face():
    """The cover changes the face with a margin proportional to it, not the picture: within 1.5x the detector's
    box (the astronaut's face, 95x122 px of a 512 px picture)."""
    from difp_stream.faces.detect import Detector
    from difp_stream.pipeline.config import PipelineConfig, Stats
    from difp_stream.pipeline.frame import FaceProtector

    img = astronaut()
    face = Detector(0.5).detect([img])[0][0]
    x0, y0, x1, y1 = face.box
    side = max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    fp = FaceProtector.__new__(FaceProtector)  # the cover stage alone: no model needed
    fp.cfg, fp.stats, fp.on_key, fp._index, fp._boxes = PipelineConfig(), Stats(), None, 0, {3: face.box}
    out = img.copy()
    fp._cover(img, out, 3)
    ys, xs = np.nonzero(np.abs(out.astype(int) - img).max(2) > 2)
    assert len(xs) > 1.2 * (x1 - x0) * (y1 - y0)  # the face is covered, with a margin ...
    assert max(abs(xs - cx).max(), abs(ys - cy).max()) <= 0.75 * side  # ... within 1.5x its box
    assert _psnr(out[int(y0):int(y1), int(x0):int(x1)], img[int(y0):int(y1), int(x0):int(x1)]) < 22
    assert fp.stats.obscured == 1
