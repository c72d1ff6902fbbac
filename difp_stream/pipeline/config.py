"""The frame pipeline's settings, counters and stage timings."""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class PipelineConfig:
    seed: int = 0
    detect_every: int = 1  # run the detector every N frames; track in between
    threshold: float = 0.5  # detector score threshold (low: a missed face is a leak, a false one costs little)
    detect_size: int = 1280  # frames are downscaled to this longest side for detection
    min_face: int = 12  # ignore faces smaller than this (pixels)
    min_difp: int = 20  # faces narrower than this (pixels) get the blur cover: too small for a fake face to hold
    #                     (20-40 px faces get a 128 px render scaled down: on the crowd clip the blurred share of
    #                     non-profile face-frames fell from 29.2% at 40 to 3.8%, 0 leaks of 73 checked faces)
    face_check_below: float = 0.8  # detections scored below this are replaced only when the face mesh finds a face
    #                                in them (else blurred: no fake face on a flower; the dinner-table clip's false
    #                                detections scored 0.51-0.71, a half-hidden eval face 0.83); 0: off ...
    face_check_min: int = 40  # ... for faces at least this wide (pixels; smaller, the mesh misses real faces too)
    max_misses: int = 12  # frames a track is kept (and covered) without a detection
    identity_refresh: int = 0  # recompute a track's identity code every N frames (0: once per track)
    max_edge_cut: float = 0.15  # a face with more than this share of its box outside the frame is blurred (cut
    #                             faces cannot be aligned; the detector finds them on a padded frame)
    change_level: float = 12.0  # with detect_every > 1: a frame whose picture changed by more than this (0-255,
    #                            1/8-scale grey) outside the tracked faces is detected anyway (a new face shows up)
    max_yaw: float = 0.5  # nose offset from the eyes' midpoint / eye distance above which a face is blurred instead
    #                       (~0.55 tan(yaw): 0.5 is about 42 degrees. At 0.3 (~29 degrees), 4 of 102 eval photo
    #                       faces, turned 30-38 degrees (0.35-0.43), were blurred; the generator renders them) ...
    small_max_yaw: float = 0.3  # ... for faces at least turned_min_size wide; smaller ones are blurred above this
    turned_min_size: int = 80  # (on the crowd clip's ~40 px faces at 0.5, a turned face came within dlib 0.57 of
    #                            its person, and non-profile face-frames blurred rose from 3.8% to 6.2%: too few
    #                            pixels to check a turned fake)
    protect_every: int = 4  # full DIFP run per track every N frames; frames between are carried (Protector.carry)
    carry_cutoff: int = 8  # latent low-pass size of the motion carried between keyframes
    render_every: int = 2  # a style-space model: carried frames are rendered every N frames; between, the last face
    #                        is warped to the new position (pose follows; expression updates every N frames). With
    #                        the expression drive: at most one new render per N frames per face (its atlas between)
    expression: bool = True  # a style-space model with expression directions: the fake takes the original's
    #                          expression every frame (face mesh + directions + a per-track atlas of renders)
    expression_render: int = 256  # the drive's renders at most this size: a 512 px render and its paste cost 2.5x
    #                               a 256 px one, and the detail match softens either to the footage's detail
    expression_min_size: int = 200  # faces whose FFHQ crop is smaller than this in the frame (faces under ~90 px
    #                                 wide) are not driven: an expression hardly shows there. (at 128 the talking s13,
    #                                 crop 143 px, is driven: mouth corr 0.22 -> 0.44, eyes 0.15 -> 0.70, but the
    #                                 RTSP test's small fake came within 20.3 dB of the camera's face: to settle)
    attributes: str = "keep"  # a style-space model with attribute directions: "keep" steers each track's fake face
    #                           to the original's apparent gender and age band; "random": whoever the draw gives
    attributes_min_size: int = 160  # ... for faces whose FFHQ crop is at least this in the frame (~80 px wide):
    #                                 on the crowd clip's smaller faces the steered fakes came within dlib 0.6 of
    #                                 their person in 2 of 65 checked faces (0 with "random")
    expression_tolerance: float = 0.35  # a new render when no atlas render is this near the original's expression
    #                                     and pose (standard deviations of each measure; smaller: more renders)
    first_margin: float = 0.1  # a style-space model keeps a track's first fake person: it is drawn this much farther
    #                            (a soft goal: one that keeps the person's gender and age band comes first)
    check_every: int = 8  # a style-space model (one DIFP run per track, then carried): its carried face is checked
    #                       against the person every N frames
    max_render: int = 512  # a style-space model renders each face at its size in the frame, up to this (128-1024)
    verify_distance: float = 0.7  # a fake face must be this far (dlib L2) from the original (0.6: same person) ...
    verify_tries: int = 2  # ... else up to this many other fake identities are tried (verify_distance 0: no check)
    blur_below: float = 0.65  # the farthest one tried still closer than this: the face is blurred (the margin above
    #                           0.6 absorbs how the distance moves from frame to frame and view to view)
    verify_every: bool = True  # check every DIFP keyframe, not only a track's first, against every look of the
    #                            person seen so far (each check adds that keyframe's original to the track's codes)
    skip_below: float = 1.0  # reuse a track's last result when its aligned crop changed less than this (mean |diff|,
    #                          0-255 levels); 0 disables the similarity skip
    keys: bool = False  # compute recovery keys (handed to ``on_key``)
    exact: bool = False  # also hand over the original pixels of each face region (exact / faithful recovery)
    pixels_quality: int = 0  # ... stored as a PNG (0, exact) or a JPEG of this quality (faithful)
    cover_quality: int = 90  # a blurred face's region goes into the keys as a JPEG of this quality (a PNG when
    #                          ``exact`` and ``pixels_quality`` 0): blurs are few, their region comes back >= 35 dB


class Timings:
    """Wall time per stage in ms (``with timings("detect"): ...``, nestable); cheap enough to stay on."""

    def __init__(self):
        self.ms: dict[str, list[float]] = {}

    @contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.ms.setdefault(stage, []).append((time.perf_counter() - t0) * 1000)


@dataclass
class Stats:
    frames: int = 0
    faces: int = 0  # face-frames covered
    protected: int = 0  # face-frames replaced (DIFP keyframes + carried frames)
    carried: int = 0  # of which carried from the track's last keyframe
    obscured: int = 0  # face-frames covered by the fail-closed blur
    profiles: int = 0  # of which profiles (turned too far for the frontal alignment)
    small: int = 0  # of which narrower than min_difp, or cut by the frame's edge
    not_faces: int = 0  # of which doubtful detections the face mesh found no face in (FaceCheck)
    reused: int = 0  # face-frames covered by the track's last protected crop (live mode, out of time)
    driven: int = 0  # face-frames whose fake took the original's expression (expression drive)
    redrawn: int = 0  # fake identities drawn again because the first was too close to the original
    steered: int = 0  # fake faces steered to the original's apparent gender and age (--attributes keep)
    skipped: int = 0  # face-frames whose crop barely changed: the track's last result was reused (similarity skip)
    tracks: set = field(default_factory=set)
