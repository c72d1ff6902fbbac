"""Identity code ``I_id``: dlib's ResNet face descriptor (128-D) of an aligned crop.

The crop follows the project's alignment template (faces/align.py), so no detection is needed: dlib's 5-point
shape predictor runs inside a fixed face box of the 128x128 template, then dlib's network describes the face.
Two boxes:

- ``DETECTOR_BOX`` (the default): where dlib's own face detector puts its box on template crops (median over 391
  eval crops). The shape predictor was trained on such boxes, so it is the more faithful recognizer: on 500 crops
  of the shared eval split, two photos of the same person fall within 0.6 in 94.0% of pairs (the template box:
  87.8%) and two people in 0.49% (0.60%), and one person's distance from frame to frame of a video is far steadier.
  The pipeline uses it for the identity codes, the protection check and the leak measurements.
- ``TEMPLATE_BOX``: the template's inner 112x112 region, how the descriptors of the training data
  (shared/data/faces) were made; the model report also measures with it, to match them.

Either way the code only conditions the DDIM inversion and the recovery key (the fake face is guided by a
surrogate identity), so the model serves both."""
from __future__ import annotations

import numpy as np

CANVAS = 128  # descriptors are computed on the 128x128 template
DETECTOR_BOX = (16, 36, 106, 126)  # left, top, right, bottom on the template
TEMPLATE_BOX = (8, 8, 120, 120)


class DlibIdentityEncoder:
    """Callable: uint8 RGB aligned crops ``[N, R, R, 3]`` -> float32 ``[N, 128]``."""

    def __init__(self, box: tuple[int, int, int, int] = DETECTOR_BOX):
        import dlib
        import face_recognition_models as frm

        self.shape = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self.net = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
        self.box = dlib.rectangle(*box)

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        import cv2

        crops = np.asarray(crops)
        if crops.ndim == 3:
            crops = crops[None]
        out = np.empty((len(crops), 128), np.float32)
        for i, c in enumerate(crops):
            if c.shape[0] != CANVAS:
                interp = cv2.INTER_CUBIC if c.shape[0] < CANVAS else cv2.INTER_AREA
                c = cv2.resize(c, (CANVAS, CANVAS), interpolation=interp)
            c = np.ascontiguousarray(c)
            out[i] = np.asarray(self.net.compute_face_descriptor(c, self.shape(c, self.box)), np.float32)
        return out
