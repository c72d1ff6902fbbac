"""Training: datasets from a manifest, the two-stage loop, checkpoints."""
from .data import FaceSet, load_faces, read_manifest
from .loop import Trainer, TrainConfig

__all__ = ["FaceSet", "load_faces", "read_manifest", "Trainer", "TrainConfig"]
