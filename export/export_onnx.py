"""Export the DIFP model to ONNX (and TensorRT engines on a GPU): same as `difp-stream export`.

    python export/export_onnx.py [--model DIR] [--out DIR] [--tensorrt]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from difp_stream.cli.tools import cmd_export  # noqa: E402

if __name__ == "__main__":
    sys.exit(cmd_export(sys.argv[1:]))
