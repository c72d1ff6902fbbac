"""difp-stream: replace every face in a video or camera feed with a face of nobody (DIFP), reversibly."""
__version__ = "0.1.0"
