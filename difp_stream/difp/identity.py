"""Identity code ``I_id``: dlib's ResNet face descriptor (128-D) of an aligned crop.

The crop follows the project's alignment template (faces/align.py), so no detection is needed: the face box is the
template's inner region and dlib's 5-point shape predictor runs inside it. This is exactly how the descriptors of
the training data were made, so training and inference see the same embedding."""
from __future__ import annotations

import numpy as np


class DlibIdentityEncoder:
    """Callable: uint8 RGB aligned crops ``[N, R, R, 3]`` -> float32 ``[N, 128]``."""

    CANVAS = 128  # descriptors are computed on the 128x128 template; the face box is its inner 112x112 region

    def __init__(self):
        import dlib
        import face_recognition_models as frm

        self._dlib = dlib
        self.shape = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self.net = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
        self.box = dlib.rectangle(8, 8, 120, 120)

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        import cv2

        crops = np.asarray(crops)
        if crops.ndim == 3:
            crops = crops[None]
        out = np.empty((len(crops), 128), np.float32)
        for i, c in enumerate(crops):
            if c.shape[0] != self.CANVAS:
                interp = cv2.INTER_CUBIC if c.shape[0] < self.CANVAS else cv2.INTER_AREA
                c = cv2.resize(c, (self.CANVAS, self.CANVAS), interpolation=interp)
            c = np.ascontiguousarray(c)
            out[i] = np.asarray(self.net.compute_face_descriptor(c, self.shape(c, self.box)), np.float32)
        return out
