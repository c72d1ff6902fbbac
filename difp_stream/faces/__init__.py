"""Faces: RetinaFace detection, tracking, the alignment template, pasting back."""
from .detect import Detector, Face
from .track import Track, Tracker

__all__ = ["Detector", "Face", "Track", "Tracker"]
