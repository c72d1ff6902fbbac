import numpy as np
import pytest

from difp_stream.faces import align
from difp_stream.faces.detect import Detector, Face
from difp_stream.faces.track import Tracker, greedy_match, iou_matrix
from difp_stream.video.synthetic import astronaut


def test_iou_matrix_and_matching():
    a = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [100, 100, 110, 110]], np.float32)
    m = iou_matrix(a, b)
    assert m.shape == (2, 3)
    assert m[0, 0] == pytest.approx(1.0) and m[0, 1] == pytest.approx(50 / 150) and m[1].max() == 0
    pairs = greedy_match(m, 0.2)
    assert pairs.tolist() == [[0, 0]]


def _face(x, y, s=40.0):
    lm = align.TEMPLATE_128 / 128 * s + [x, y]
    return Face(np.array([x, y, x + s, y + s], np.float32), lm.astype(np.float32), 0.99)


def test_tracker_keeps_identity_through_motion_and_misses():
    tr = Tracker(max_misses=3)
    ids = [t.id for t in tr.update([_face(10, 10), _face(200, 50)], 0)]
    assert ids == [0, 1]
    for k in range(1, 5):  # move right 5 px per frame
        tracks = tr.update([_face(10 + 5 * k, 10), _face(200, 50)], k)
    assert sorted(t.id for t in tracks) == [0, 1]
    # a missed frame: the track coasts on its velocity and is still returned (its face stays covered)
    tracks = tr.update([_face(200, 50)], 5)
    t0 = next(t for t in tracks if t.id == 0)
    box, _ = tr.position(t0)
    assert not t0.detected and box[0] > 10 + 5 * 4
    tracks = tr.update([_face(10 + 5 * 6, 10), _face(200, 50)], 6)
    assert sorted(t.id for t in tracks) == [0, 1]  # re-associated, no new id
    for k in range(7, 12):
        tracks = tr.update([_face(200, 50)], k)
    assert [t.id for t in tracks] == [1]  # dropped after max_misses


def test_alignment_round_trip_leaves_frame_unchanged():
    img = astronaut()
    det = Detector().detect([img])[0]
    assert len(det) == 1 and det[0].score > 0.9
    m = align.similarity(det[0].landmarks, 128)
    face = align.crop(img, m, 128)
    # the aligned landmarks land on the template (eyes and nose closely; the mouth varies with expression)
    lm = np.c_[det[0].landmarks, np.ones(5)] @ m.T
    assert np.abs(lm - align.TEMPLATE_128)[:3].max() < 3 and np.abs(lm - align.TEMPLATE_128).max() < 15
    out = img.copy()
    align.paste(out, face, m, face)
    diff = np.abs(out.astype(int) - img.astype(int))
    assert diff.mean() < 1.0 and np.percentile(diff, 99.9) < 40


def test_obscure_destroys_the_face():
    img = astronaut()
    det = Detector().detect([img])[0][0]
    out = img.copy()
    align.obscure(out, align.similarity(det.landmarks, 128))
    assert Detector().detect([out])[0] == [] or all(f.score < 0.9 for f in Detector().detect([out])[0])
    x0, y0, x1, y1 = det.box.astype(int)
    region = out[y0:y1, x0:x1].astype(float)
    # a mosaic keeps almost no detail: local gradients collapse
    assert np.abs(np.diff(region, axis=1)).mean() < 0.25 * np.abs(np.diff(img[y0:y1, x0:x1].astype(float), axis=1)).mean()


def test_profile_faces_are_recognised():
    """At the pipeline's default a face turned ~35 degrees (nose 0.4 eye distances off the eyes' midpoint: the
    generator renders it) is not a profile; a nose beyond an eye, or eyes that coincide, are."""
    from difp_stream.pipeline.config import PipelineConfig

    limit = PipelineConfig().max_yaw
    frontal = align.TEMPLATE_128.copy()
    assert not align.is_profile(frontal, limit)
    eyes = frontal[1, 0] - frontal[0, 0]
    three_quarter = frontal.copy()
    three_quarter[2, 0] = (frontal[0, 0] + frontal[1, 0]) / 2 + 0.4 * eyes
    assert not align.is_profile(three_quarter, limit) and align.is_profile(three_quarter, 0.3)
    turned = frontal.copy()
    turned[2, 0] = frontal[1, 0] + 2  # nose beyond the right eye
    assert align.is_profile(turned, limit)
    collapsed = frontal.copy()
    collapsed[1] = collapsed[0]
    assert align.is_profile(collapsed, limit)


def test_a_doubtful_detection_is_a_face_only_when_the_mesh_finds_one():
    """FaceCheck with the shipped face mesh: at a low detector score the astronaut's face is taken for a face and
    the same landmarks over a patterned wall are not (blurred, never given a fake face), looked at again only every
    ``every`` frames; one confident detection settles a track; faces under ``min_size`` are not looked at."""
    from difp_stream.faces.mesh import load_mesh
    from difp_stream.pipeline.tracks import FaceCheck

    img = astronaut()
    face = Detector().detect([img])[0][0]
    wall = np.random.default_rng(0).integers(0, 255, (img.shape[0] // 16, img.shape[1] // 16, 3), dtype=np.uint8)
    wall = np.kron(wall, np.ones((16, 16, 1), np.uint8))  # 16 px tiles: no face anywhere
    check = FaceCheck(load_mesh(), below=0.9, min_size=40, every=8)
    w = float(face.box[2] - face.box[0])
    assert check(0, img, 1, 0.6, face.landmarks, w)
    assert not check(0, wall, 2, 0.6, face.landmarks, w)
    assert not check(3, img, 2, 0.6, face.landmarks, w)  # not looked at again before 8 frames...
    assert check(8, img, 2, 0.6, face.landmarks, w)  # ... then it is, and the mesh finds the face
    assert check(9, wall, 2, 0.6, face.landmarks, w)  # settled for the track's life
    assert check(0, wall, 3, 0.95, face.landmarks, w) and check(1, wall, 3, 0.6, face.landmarks, w)
    assert check(0, wall, 4, 0.6, face.landmarks, 30.0)  # too small to look at: taken for a face
    check.forget({1})
    assert not check(20, wall, 2, 0.6, face.landmarks, w)  # a track that ended is forgotten


def test_dlib_network_in_pytorch_gives_dlibs_own_descriptors():
    """The identity encoder runs dlib's face recognition ResNet in PyTorch (weights read from the wheel's .dat):
    on faces, their flips and a darkened and a noisy copy, its descriptors are dlib's compute_face_descriptor's."""
    import dlib
    import face_recognition_models

    from difp_stream.difp.identity import DlibIdentityEncoder

    enc = DlibIdentityEncoder()
    img = astronaut()
    face = Detector(threshold=0.5).detect([img])[0][0]
    c = align.crop(img, align.similarity(face.landmarks, 128), 128)
    rng = np.random.default_rng(0)
    crops = np.stack([c, c[:, ::-1], (c * 0.4).astype(np.uint8),
                      np.clip(c + rng.normal(0, 12, c.shape), 0, 255).astype(np.uint8)])
    ours = enc(crops)
    ref = dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())
    theirs = np.stack([np.asarray(ref.compute_face_descriptor(x, enc.shape(x, enc.box)))
                       for x in map(np.ascontiguousarray, crops)])
    assert ours.shape == (4, 128) and ours.dtype == np.float32
    assert np.abs(ours - theirs).max() < 1e-4
    assert 0.05 < np.linalg.norm(ours[0] - ours[2]) < 0.6  # the same person, a different picture
    assert enc(crops[:0]).shape == (0, 128)

