import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from difp_stream.difp import DIFPModel, ModelConfig

SHARED = Path(__file__).resolve().parents[2] / "shared"
FACES = SHARED / "data" / "faces"
VIDEOS = SHARED / "data" / "videos"

# key files are signed with "this host's" key: the tests' own, in a folder of their own (subprocesses inherit it)
os.environ["DIFP_STREAM_CONFIG"] = tempfile.mkdtemp(prefix="difp-config-")

torch.set_num_threads(1)  # tiny models: one thread avoids oversubscription with ONNX Runtime and dlib


def pytest_collection_modifyitems(config, items):
    """Tests that need an RTSP server, Ray or a training run are slow too (``-m "not slow"`` leaves them out)."""
    for item in items:
        if any(item.get_closest_marker(m) for m in ("rtsp", "ray", "train")):
            item.add_marker(pytest.mark.slow)


def tiny_config(**kw) -> ModelConfig:
    base = dict(resolution=32, vae_channels=(16, 32), latent_channels=4, unet_channels=(16, 32),
                unet_attn_levels=(False, True), unet_head_dim=16, token_dim=32, style_input=8)
    base.update(kw)
    return ModelConfig(**base)


@pytest.fixture(scope="session")
def tiny_model() -> DIFPModel:
    """A small randomly initialised model (nothing here pretends to be trained)."""
    torch.manual_seed(0)
    return DIFPModel(tiny_config()).eval()


@pytest.fixture
def crops() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)


@pytest.fixture
def id_codes() -> np.ndarray:
    return (np.random.default_rng(1).normal(size=(3, 128)) * 0.1).astype(np.float32)


def needs(path: Path):
    return pytest.mark.skipif(not path.exists(), reason=f"{path} not present")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_model):
    """The tiny model saved as a model folder (for ``--model DIR``)."""
    d = tmp_path_factory.mktemp("model")
    tiny_model.save(d)
    return d
