"""The expression drive: the face mesh, the shipped directions, absolute targeting, the paste mask, the pipeline."""
import numpy as np
import pytest
import torch

from difp_stream.difp import load_default
from difp_stream.difp.expression import Expression
from difp_stream.faces import mesh as fm

MOUTH, SMILE, EYES = (fm.MEASURES.index(n) for n in ("mouth", "smile", "eyes"))


@pytest.fixture(scope="module")
def model():
    return load_default()


@pytest.fixture(scope="module")
def expr(model):
    assert model.directions is not None, "the shipped model has no directions.npz"
    return Expression(model.directions, model)


def latent(model, seed: int, psi: float = 0.7) -> torch.Tensor:
    g = model.generator
    with torch.no_grad():
        w = g.mapping(torch.from_numpy(np.random.default_rng(seed).standard_normal((1, 512)).astype(np.float32)))
        w = g.mean_style() + psi * (w - g.mean_style())
        return model.to_latent(g.plus(w).clone())


def render(model, z: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return ((model.decode(z, 256)[0].permute(1, 2, 0).numpy() + 1) * 127.5 + 0.5).clip(0, 255).astype(np.uint8)


def measure(img: np.ndarray) -> np.ndarray:
    return fm.measures(fm.load_mesh()(img[None]))[0]


def test_mesh_finds_a_generated_face_its_measures_and_region(model):
    img = render(model, latent(model, 1))
    r = fm.load_mesh()(img[None])
    assert r.points.shape == (1, 478, 3) and r.scores.shape == (1, 52) and r.presence[0] > 0.9
    p = r.points[0, :, :2]
    assert p.min() > 0 and p.max() < 256  # the whole face inside the FFHQ crop
    m = fm.measures(r)[0]
    assert 0 <= m[MOUTH] < 1 and 0 <= m[SMILE] <= 1 and 0.05 < m[EYES] < 0.6 and abs(m[-2]) < 0.3
    region = fm.face_region(p, 256)
    assert 0.12 < region.mean() < 0.5  # brows to chin, cheek to cheek
    eyes_y = int(p[[33, 263], 1].mean())
    assert region[int(p[152, 1]) - 3, int(p[152, 0])] == 1 and region[eyes_y, int(p[1, 0])] == 1
    assert region[: max(0, int(p[10, 1]) - 1)].sum() == 0  # nothing above the forehead's top (hair, hat)
    five = fm.five_points(p)
    assert five[0, 0] < five[2, 0] < five[1, 0] and five[2, 1] < five[3, 1]  # eyes, nose, mouth in place


def test_directions_move_the_measured_expression_the_right_way(model, expr):
    z = latent(model, 2)
    m0 = measure(render(model, z))
    for row, change in ((MOUTH, 0.25), (SMILE, 0.5), (SMILE, -0.4), (EYES, -0.12)):
        target = m0.copy()
        target[row] = max(0.0, m0[row] + change)
        m1 = measure(render(model, expr.apply(z, expr.steps(m0[None], target[None]))))
        moved = m1[row] - m0[row]
        if target[row] == m0[row]:  # nothing to move (e.g. no smile to take away)
            continue
        assert np.sign(moved) == np.sign(target[row] - m0[row]) and abs(moved) > 0.3 * abs(target[row] - m0[row]), \
            (fm.MEASURES[row], change, m0[row], m1[row])


def test_projection_removes_only_the_expression_part(model, expr):
    delta = torch.randn(2, 23, 512, generator=torch.Generator().manual_seed(0))
    off = expr.project_off(delta)
    coef = off.flatten(1) @ expr.v.flatten(1).T
    assert float(coef.abs().max()) < 1e-3 * float((delta.flatten(1) @ expr.v.flatten(1).T).abs().max())
    moved = expr.apply(off, np.ones((2, len(expr.names)), np.float32))
    assert torch.allclose(expr.project_off(moved), off, atol=1e-3)  # a step along them is exactly what goes


def test_absolute_targeting_reaches_the_originals_mouth_within_20_percent(model, expr):
    """A synthetic pair: the 'original' is one generated person with the mouth open, the fake another with it shut;
    the drive (targets, gain learned from its own renders) brings the fake's mouth to the original's."""
    from difp_stream.pipeline.expression import ExpressionDrive

    drive = ExpressionDrive(expr, fm.load_mesh())
    za = latent(model, 3)
    ma = measure(render(model, za))
    target = ma.copy()
    target[MOUTH] = ma[MOUTH] + 0.3
    original = render(model, expr.apply(za, expr.steps(ma[None], target[None])))
    te = drive.observe(7, original)
    want = te.smooth[MOUTH]
    assert want > 0.2, want  # the original's mouth is open
    zb = latent(model, 4)
    drive.keyframe(te, zb, render(model, zb))
    assert te.fake[MOUTH] < 0.5 * want  # the fake's is (nearly) shut
    for i in range(1, 4):  # up to three renders: each measured, each corrects the track's gain
        look, new = drive.pick(te, i, every=1)
        if not new:
            break
        aim = drive.target(te)
        assert drive.rendered(te, aim, render(model, expr.apply(zb, drive.steps(te, aim)[None])), i) is not None
    look, _ = drive.pick(te, 9, every=1)  # the atlas's render nearest the original's expression
    assert len(te.atlas) >= 2 and abs(look.measured[MOUTH] - want) <= 0.2 * want, (look.measured[MOUTH], want)


def test_paste_mask_never_covers_pixels_outside_both_faces(model):
    import cv2

    from difp_stream.pipeline.expression import ExpressionDrive

    a, b = render(model, latent(model, 5)), render(model, latent(model, 6))
    shift = np.float32([[1.05, 0.04, -9], [-0.04, 1.05, 6]])  # the fake a little bigger, turned and moved
    b = cv2.warpAffine(b, shift, (256, 256), borderMode=cv2.BORDER_REFLECT101)
    pa, pb = (fm.load_mesh()(x[None]).points[0, :, :2] for x in (a, b))

    class _X:  # the drive's mask needs no directions
        class d:
            std = np.ones(6, np.float32)
        rows = [0, 1, 2, 3]

    drive = ExpressionDrive(_X(), fm.load_mesh())
    te = drive.observe(1, a)
    for size in (256, 512):
        mask = drive.mask(te, pb * (size / 256), size)
        both = fm.face_region(pa * (size / 256), size) & fm.face_region(pb * (size / 256), size)
        assert mask.shape == (size, size) and mask.max() == pytest.approx(1.0, abs=1e-3)
        assert not np.any(mask[both == 0] > 0)  # nothing outside either face's region is ever touched
        assert (mask > 0.99).mean() > 0.5 * both.mean()  # and most of the shared face is fully replaced


def test_pipeline_takes_the_originals_expression_on_a_tiny_clip(model):
    """Four frames of a generated person, mouth shut / open / shut / open: the output's fake (another person)
    opens its mouth where the original does, and nothing outside the face changes."""
    from difp_stream.difp import Protector
    from difp_stream.difp.identity import DlibIdentityEncoder
    from difp_stream.faces import align
    from difp_stream.gan.encoder import ffhq_transform
    from difp_stream.pipeline import FaceProtector, PipelineConfig

    x = Expression(model.directions, model)
    z = latent(model, 8)
    m0 = measure(render(model, z))
    frames = []
    for k in range(4):
        t = m0.copy()
        t[MOUTH] = 0.02 if k % 2 == 0 else 0.4
        face = render(model, x.apply(z, x.steps(m0[None], t[None])))
        frame = np.full((384, 384, 3), 90, np.uint8)
        frame[64:320, 64:320] = face
        frames.append(frame)
    fp = FaceProtector(Protector(model, device="cpu"), DlibIdentityEncoder(),
                       PipelineConfig(verify_distance=0.0, keys=True, render_every=1))
    assert fp.drive is not None
    outs, faces = [], []
    for i, f in enumerate(frames):
        outs.append(fp.process(i, f))
        faces.append(fp.last_faces[0])
    assert fp.stats.driven == 4 and fp.stats.obscured == 0
    mouths = []
    for f, o, (_, _, lms) in zip(frames, outs, faces):
        mouths.append(measure(align.crop(o, ffhq_transform(lms, 256).astype(np.float32), 256))[MOUTH])
        changed = np.any(o != f, axis=2)
        ys, xs = np.nonzero(changed)
        assert ys.min() >= 64 and xs.min() >= 64 and ys.max() < 320 and xs.max() < 320  # only inside the face
    assert min(mouths[1], mouths[3]) > max(mouths[0], mouths[2]) + 0.1, mouths


class _Stub:  # what the drive reads of the directions when no render is asked
    class d:
        std = np.ones(6, np.float32)
    rows = [0, 1, 2, 3]


def test_forehead_fade_is_solid_below_and_zero_above_the_forehead(model):
    p = fm.load_mesh()(render(model, latent(model, 5))[None]).points[0, :, :2]
    ramp = fm.forehead_fade(p, 256)[:, 0]
    brow = float(p[fm.BROWS, 1].min())
    h = brow - float(p[fm.FACE_OVAL, 1].min())
    assert ramp.shape == (256,) and np.all(np.diff(ramp) >= 0)  # rising from the top of the crop downwards
    assert ramp[: int(brow - 0.45 * h)].max() == 0 and ramp[int(np.ceil(brow - 0.15 * h)):].min() == 1
    assert 0 < ramp[int(brow - 0.3 * h)] < 1  # a soft hairline, no line across the forehead


def test_eyes_and_brows_follow_the_persons_change_pose_the_fakes_offset():
    """A person with narrow eyes (their usual) gives the fake its own eyes, a blink closes them; a brow raise over
    the person's usual raises the fake's from its own; the pose asked is the person's plus the fake's build offset."""
    from difp_stream.pipeline.expression import POSE, ExpressionDrive, TrackExpression

    drive = ExpressionDrive(_Stub(), fm.load_mesh())
    i_eyes, i_brows = fm.MEASURES.index("eyes"), fm.MEASURES.index("brows")
    te = TrackExpression()
    usual = np.array([0.05, 0.1, 0.15, 0.3, 0.02, -0.05], np.float32)  # narrow eyes, high brows
    for _ in range(40):
        te.history.append(usual.copy())
    te.fake = np.array([0.0, 0.2, 0.3, 0.2, 0.1, 0.05], np.float32)
    te.pose_offset = te.fake[POSE] - usual[POSE]
    te.smooth = usual.copy()
    t = drive.target(te)
    assert t[i_eyes] == pytest.approx(0.3) and t[i_brows] == pytest.approx(0.2)  # the fake's own, not sleepy
    assert np.allclose(t[POSE], te.fake[POSE])  # the fake's own pose for the person's usual one
    te.smooth = usual.copy()
    te.smooth[i_eyes], te.smooth[i_brows], te.smooth[POSE[0]] = 0.0, 0.4, usual[POSE[0]] + 0.2
    t = drive.target(te)
    assert t[i_eyes] == pytest.approx(0.0)  # a blink closes the fake's eyes
    assert t[i_brows] == pytest.approx(0.3)  # raised by the person's 0.1 over their usual
    assert t[POSE[0]] == pytest.approx(te.fake[POSE[0]] + 0.2)  # the head turns as far as the person's


def test_render_span_grows_with_the_atlas():
    from difp_stream.pipeline.expression import ExpressionDrive, Look, TrackExpression

    drive = ExpressionDrive(_Stub(), fm.load_mesh(), settle=2)
    te = TrackExpression(smooth=np.full(6, 0.9, np.float32))
    te.history.append(te.smooth.copy())
    te.last_render = 0
    assert drive.pick(te, 2, every=2)[1]  # an empty atlas: a render after ``every`` frames
    te.atlas = [Look(crop=None, points=None, measured=np.zeros(6, np.float32)) for _ in range(4)]  # none near the target
    assert not drive.pick(te, 5, every=2)[1]  # four renders: the span is 2 * (1 + 4 // 2) = 6 frames
    assert drive.pick(te, 6, every=2)[1]
