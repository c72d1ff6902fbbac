"""Run difp-stream from a checkout: ``python cli.py in.mp4 out.mp4`` (same as the ``difp-stream`` command)."""
import sys

from difp_stream.cli import main

if __name__ == "__main__":
    sys.exit(main())
