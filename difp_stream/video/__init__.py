"""Video I/O with PyAV: files (and later RTSP and segments), audio and metadata passed through."""
from .io import InputError, Interrupted, OutputError, VideoInfo, probe, stream_tag, transcode

__all__ = ["InputError", "OutputError", "Interrupted", "VideoInfo", "probe", "stream_tag", "transcode"]
