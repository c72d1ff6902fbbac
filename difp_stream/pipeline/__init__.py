"""The frame pipeline: detect -> track -> align -> protect (batched) -> paste back, fail-closed (``frame.py``); its
settings and counters (``config.py``); per-track state, the similarity skip and the identity check (``tracks.py``);
authorized replay at the frame level (``recover.py``).

``FaceProtector(protector, identity_encoder, cfg).process(frame_index, rgb) -> rgb`` is the frame-level API for
library use; the video loops (files: ``video.io.transcode``; live: ``app.live.run_live``) call it per frame;
the stages of a model that keeps one fake person per track (expression drive, attribute steer, checks of carried
faces) are in ``carry.py``."""
from .config import PipelineConfig, Stats, Timings
from .frame import FaceProtector
from .recover import FaceRecoverer
from .tracks import MAX_LOOKS, FaceResult, TrackState

__all__ = ["PipelineConfig", "Stats", "Timings", "FaceProtector", "FaceRecoverer", "FaceResult", "TrackState",
           "MAX_LOOKS"]
