"""`difp-stream serve CONFIG`: many cameras on Ray, one machine or a cluster. Camera workers are actors that Ray
places and restarts (``cameras.py``); the face model is a shared service that batches faces across cameras
(``service.py``); the driver starts both, watches them and writes a status file (``run.py``)."""
from .config import ServeConfig, load
from .run import read_status, serve

__all__ = ["ServeConfig", "load", "read_status", "serve"]
