"""Authorized replay at the frame level: recovered faces pasted back where the key records say."""
from __future__ import annotations

import numpy as np

from ..difp import Protector
from ..faces import align
from ..keys.keyfile import FaceRecord


class FaceRecoverer:
    """Authorized replay: paste recovered faces (from decrypted key records) back into protected frames."""

    def __init__(self, protector: Protector, records):
        """``records``: any iterable of :class:`FaceRecord` (a key file's, in the order it was written); it is read
        as the frames come, so a long recovery holds one frame's records at a time. Records out of frame order are
        sorted first (the whole list is then held)."""
        self.p = protector
        if isinstance(records, list) and any(a.frame_index > b.frame_index for a, b in zip(records, records[1:])):
            records = sorted(records, key=lambda r: r.frame_index)
        self._records = iter(records)
        self._next: FaceRecord | None = None
        self.restored = 0

    def _take(self, index: int) -> list[FaceRecord]:
        """The records of frame ``index`` (earlier ones, for frames that never came, are passed over)."""
        recs = []
        while True:
            if self._next is None:
                self._next = next(self._records, None)
                if self._next is None:
                    return recs
            if self._next.frame_index > index:
                return recs
            if self._next.frame_index == index:
                recs.append(self._next)
            self._next = None

    def process(self, index: int, frame: np.ndarray) -> np.ndarray:
        recs = self._take(index)
        if not recs:
            return frame
        out = frame.copy()
        diffusion = [r for r in recs if r.exact is None]
        if diffusion:
            crops = self.p.recover([r.key for r in diffusion])
            for r, c in zip(diffusion, crops):  # the transform maps to the model's crop; keys may be larger
                align.paste(out, c, r.transform * (c.shape[0] / self.p.resolution),
                            mask=align.framing_mask(self.p.model.framing, c.shape[0]))
        for r in recs:
            if r.exact is not None:
                (x0, y0, x1, y1), pixels = r.exact[0], r.exact_pixels()
                if pixels.shape[:2] == (y1 - y0, x1 - x0) and y1 <= out.shape[0] and x1 <= out.shape[1]:
                    out[y0:y1, x0:x1] = pixels
        self.restored += len(recs)
        return out
