import numpy as np

from difp_stream.difp import Protector, load_default
from difp_stream.difp.config import ModelConfig


def test_shipped_weights_load_and_protect_a_face():
    model = load_default()
    assert model.is_trained
    r = model.cfg.resolution
    assert r >= 64
    from tests.clips import astronaut
    from difp_stream.faces import align
    from difp_stream.faces.detect import Detector
    import cv2

    img = astronaut()
    face = Detector().detect([img])[0][0]
    crop = cv2.resize(align.crop(img, align.similarity(face.landmarks, 128), 128), (r, r), interpolation=cv2.INTER_AREA)
    p = Protector(model, model.cfg.sampling_config(), device="cpu")
    ids = np.zeros((1, model.cfg.id_dim), np.float32) + model.id_mean.numpy()
    out = p.protect(crop[None], seeds=1, id_codes=ids)
    assert out.crops.shape == (1, r, r, 3)
    assert 20 < out.crops.mean() < 235 and out.crops.std() > 10  # an image, not a blank
    rec = p.recover(out.keys)[0]
    mse = np.mean((rec.astype(float) - crop.astype(float)) ** 2)
    assert 10 * np.log10(255**2 / mse) > 22  # the trained VAE reconstructs the face


def test_model_recommended_sampling_overrides_paper_defaults():
    cfg = ModelConfig(sampling={"s_id": 5.0, "strength": 1.0, "unknown": 1})
    s = cfg.sampling_config(steps=2, g_rea=None)
    assert (s.s_id, s.strength, s.steps, s.g_rea) == (5.0, 1.0, 2, 0.6)
