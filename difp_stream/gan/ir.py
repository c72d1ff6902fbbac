"""A small PyTorch executor for OpenVINO IR graphs (the ``.xml`` + ``.bin`` files a converter writes).

MobileStyleGAN ships only as IR inside the ``random-face`` wheel: this module reads such a graph once, keeps its
weights as tensors, and runs it with PyTorch ops, so every backend of the project (PyTorch on CPU or CUDA in fp16,
ONNX export, TensorRT from that ONNX) can run the generator. Only the ops the generator uses are implemented; an
unknown op is refused when the graph is read, not when it runs.

Shape arithmetic (ShapeOf, Gather, Concat, ... on integer tensors) is evaluated as Python integers from the live
tensors' shapes, so a graph converted for batch 1 runs any batch.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

_DTYPES = {"f32": np.float32, "f16": np.float16, "i64": np.int64, "i32": np.int32, "u8": np.uint8, "i8": np.int8,
           "boolean": np.bool_, "u1": np.uint8}


@dataclass
class Node:
    id: str
    type: str
    name: str
    attrs: dict
    inputs: list = field(default_factory=list)  # (source node id, source port) per input port, in port order
    out_ports: list = field(default_factory=list)  # output port numbers, in order
    out_shapes: list = field(default_factory=list)


def read_ir(xml: str | Path, weights: str | Path) -> tuple[list[Node], dict[str, np.ndarray]]:
    """The graph's nodes in execution order and its constants (node id -> array)."""
    root = ET.parse(xml).getroot()
    blob = Path(weights).read_bytes()
    nodes: dict[str, Node] = {}
    consts: dict[str, np.ndarray] = {}
    for layer in root.find("layers"):
        data = layer.find("data")
        attrs = dict(data.attrib) if data is not None else {}
        n = Node(layer.get("id"), layer.get("type"), layer.get("name"), attrs)
        out = layer.find("output")
        if out is not None:
            for port in out:
                n.out_ports.append(port.get("id"))
                n.out_shapes.append([int(d.text) for d in port.findall("dim")])
        nodes[n.id] = n
        if n.type == "Const":
            dt = _DTYPES[attrs["element_type"]]
            off, size = int(attrs["offset"]), int(attrs["size"])
            shape = [int(v) for v in attrs["shape"].split(",") if v.strip()] if attrs.get("shape") else []
            consts[n.id] = np.frombuffer(blob, dt, count=size // np.dtype(dt).itemsize, offset=off).reshape(shape)
    ins: dict[str, dict[int, tuple[str, str]]] = {}
    for e in root.find("edges"):
        ins.setdefault(e.get("to-layer"), {})[int(e.get("to-port"))] = (e.get("from-layer"), e.get("from-port"))
    for nid, ports in ins.items():
        nodes[nid].inputs = [ports[k] for k in sorted(ports)]
    order, seen = [], set()

    def visit(nid: str) -> None:  # depth-first topological order (iterative: graphs are deep)
        stack = [(nid, False)]
        while stack:
            cur, done = stack.pop()
            if done:
                if cur not in seen:
                    seen.add(cur)
                    order.append(nodes[cur])
                continue
            if cur in seen:
                continue
            stack.append((cur, True))
            stack.extend((src, False) for src, _ in reversed(nodes[cur].inputs) if src not in seen)

    for n in nodes.values():
        if n.type == "Result":
            visit(n.id)
    unknown = {n.type for n in order} - set(OPS) - {"Parameter", "Const", "Result"}
    if unknown:
        raise ValueError(f"the graph uses ops this executor does not implement: {sorted(unknown)}")
    return order, consts


def _ints(v) -> list[int]:
    """A flat list of ints from an int, a (nested) list, or an integer array/tensor."""
    if isinstance(v, (torch.Tensor, np.ndarray)):
        v = v.tolist()
    if isinstance(v, (list, tuple)):
        return [i for x in v for i in _ints(x)]
    return [int(v)]


def _is_shape(v) -> bool:
    return isinstance(v, (list, int))


def _pairs(a: dict, key: str) -> list[int]:
    return [int(x) for x in a[key].split(",")]


def _conv_pad(a: dict) -> tuple[list[int], list[int]]:
    if a.get("auto_pad", "explicit") not in ("explicit", "notset"):
        raise ValueError(f"auto_pad {a['auto_pad']} is not supported")
    return _pairs(a, "pads_begin"), _pairs(a, "pads_end")


def _padded(x: torch.Tensor, a: dict) -> tuple[torch.Tensor, int | tuple]:
    (pt, pl), (pb, pr) = _conv_pad(a)
    if pt == pb and pl == pr:
        return x, (pt, pl)
    return F.pad(x, (pl, pr, pt, pb)), 0


def _convolution(a, x, w):
    x, pad = _padded(x, a)
    return F.conv2d(x, w, stride=_pairs(a, "strides"), padding=pad, dilation=_pairs(a, "dilations"))


def _group_convolution(a, x, w):  # w: [G, O/G, I/G, kh, kw]
    x, pad = _padded(x, a)
    g = w.shape[0]
    return F.conv2d(x, w.reshape(-1, *w.shape[2:]), stride=_pairs(a, "strides"), padding=pad,
                    dilation=_pairs(a, "dilations"), groups=g)


def _group_deconvolution(a, x, w, *out_shape):  # w: [G, I/G, O/G, kh, kw]
    (pt, pl), (pb, pr) = _conv_pad(a)
    if (pt, pl) != (pb, pr) or out_shape:
        raise ValueError("asymmetric padding / output shape of a transposed convolution is not supported")
    g = w.shape[0]
    op = _pairs(a, "output_padding") if a.get("output_padding") else [0, 0]
    kh, kw = w.shape[-2:]
    if (w.shape[1] == w.shape[2] == 1 and g == x.shape[1] and _pairs(a, "strides") == [kh, kw]
            and (pt, pl) == (0, 0) and op == [0, 0]):  # depthwise, stride = kernel: each pixel becomes a kh x kw
        b, c, h, wd = x.shape                        # block (the inverse wavelet steps): a broadcast multiply
        y = x[:, :, :, None, :, None] * w.reshape(1, c, 1, kh, 1, kw)
        return y.reshape(b, c, h * kh, wd * kw)
    return F.conv_transpose2d(x, w.reshape(-1, *w.shape[2:]), stride=_pairs(a, "strides"), padding=(pt, pl),
                              output_padding=op, groups=g, dilation=_pairs(a, "dilations"))


def _reshape(a, x, target):
    t = _ints(target.tolist() if isinstance(target, torch.Tensor) else target)
    if a.get("special_zero", "false") == "true":
        t = [x.shape[i] if v == 0 else v for i, v in enumerate(t)]
    return x.reshape(t)


def _gather(a, data, idx, axis):
    axis = int(_ints(axis.tolist() if isinstance(axis, torch.Tensor) else axis)[0])
    if _is_shape(data):
        i = idx.tolist() if isinstance(idx, torch.Tensor) else idx
        return data[i] if isinstance(i, int) else [data[k] for k in i]
    return torch.index_select(data, axis, torch.as_tensor(idx, device=data.device).reshape(-1)).reshape(
        *data.shape[:axis], *np.shape(idx), *data.shape[axis + 1:])


def _unsqueeze(a, x, axes):
    axes = _ints(axes.tolist() if isinstance(axes, torch.Tensor) else axes)
    if _is_shape(x):
        return _ints(x)  # shape arithmetic: a scalar becomes a one-element list
    for ax in sorted(axes):
        x = x.unsqueeze(ax)
    return x


def _squeeze(a, x, axes=None):
    if axes is None:
        return x.squeeze()
    for ax in sorted(_ints(axes.tolist() if isinstance(axes, torch.Tensor) else axes), reverse=True):
        x = x.squeeze(ax)
    return x


def _concat(a, *xs):
    if all(_is_shape(x) or (isinstance(x, torch.Tensor) and x.dtype == torch.int64) for x in xs):
        out = []
        for x in xs:
            out += _ints(x.tolist() if isinstance(x, torch.Tensor) else x)
        return out
    return torch.cat(xs, int(a["axis"]))


def _variadic_split(a, x, axis, lengths):
    axis = int(_ints(axis.tolist() if isinstance(axis, torch.Tensor) else axis)[0])
    lengths = _ints(lengths.tolist() if isinstance(lengths, torch.Tensor) else lengths)
    if -1 in lengths:
        lengths[lengths.index(-1)] = x.shape[axis] - (sum(lengths) + 1)
    return list(torch.split(x, lengths, axis))


def _broadcast(a, x, shape, *rest):
    if a.get("mode", "numpy") not in ("numpy", "bidirectional"):
        raise ValueError(f"Broadcast mode {a['mode']} is not supported")
    shape = _ints(shape.tolist() if isinstance(shape, torch.Tensor) else shape)
    if _is_shape(x):
        return np.broadcast_to(np.array(x, np.int64), shape).tolist()
    if a.get("mode") == "bidirectional":
        return x * torch.ones(shape, dtype=x.dtype, device=x.device)
    return x.expand(shape)


def _tile(a, x, reps):
    reps = _ints(reps.tolist() if isinstance(reps, torch.Tensor) else reps)
    if _is_shape(x):
        return np.tile(np.array(x, np.int64), reps).tolist()
    return x.repeat(*reps)


def _prelu(a, x, slope):
    if slope.numel() == 1:
        return F.leaky_relu(x, float(slope.reshape(-1)[0]))
    return F.prelu(x, slope.reshape(-1))


def _reduce_mean(a, x, axes):
    axes = _ints(axes.tolist() if isinstance(axes, torch.Tensor) else axes)
    return x.mean(dim=axes, keepdim=a.get("keep_dims", "false") == "true")


def _matmul(a, x, y):
    if a.get("transpose_a") == "true":
        x = x.transpose(-1, -2)
    if a.get("transpose_b") == "true":
        y = y.transpose(-1, -2)
    return x @ y


def _shape_of(a, x):
    return [len(x)] if isinstance(x, list) else [] if isinstance(x, int) else list(x.shape)


OPS = {
    "MatMul": _matmul, "Add": lambda a, x, y: x + y, "Multiply": lambda a, x, y: x * y,
    "Power": lambda a, x, y: x ** y, "ReduceMean": _reduce_mean, "PReLU": _prelu, "ShapeOf": _shape_of,
    "Gather": _gather, "Unsqueeze": _unsqueeze, "Squeeze": _squeeze, "Concat": _concat, "Reshape": _reshape,
    "Convolution": _convolution, "GroupConvolution": _group_convolution,
    "GroupConvolutionBackpropData": _group_deconvolution, "VariadicSplit": _variadic_split,
    "Broadcast": _broadcast, "Tile": _tile,
}


class IRGraph(torch.nn.Module):
    """Runs an IR graph. ``forward(inputs, replace=None, outputs=None)``: ``inputs`` maps Parameter names to
    tensors; ``replace`` maps a node name to a tensor used as that node's output (a graph edit without editing:
    e.g. per-layer styles in place of the shared one); ``outputs`` names the nodes whose values to return (an
    early exit: execution stops once they are known). Returns a dict name -> tensor (default: the Results)."""

    def __init__(self, nodes: list[Node], consts: dict[str, np.ndarray]):
        super().__init__()
        self.nodes = nodes
        self.by_name = {n.name: n for n in nodes}
        self._const_names = {}
        for k, (nid, arr) in enumerate(sorted(consts.items(), key=lambda kv: int(kv[0]))):
            name = f"c{nid}"
            t = torch.from_numpy(np.array(arr))
            if t.dtype == torch.float16:
                t = t.float()
            self.register_buffer(name, t, persistent=True)
            self._const_names[nid] = name
        self.int_consts = {nid: np.array(a) for nid, a in consts.items() if np.issubdtype(np.array(a).dtype, np.integer)}

    def _const(self, nid: str):
        if nid in self.int_consts:
            v = self.int_consts[nid]
            return v.tolist() if v.ndim else int(v)
        return getattr(self, self._const_names[nid])

    def forward(self, inputs: dict, replace: dict | None = None, outputs: list[str] | None = None) -> dict:
        replace = replace or {}
        want = set(outputs or [n.name for n in self.nodes if n.type == "Result"])
        vals: dict[str, list] = {}
        got = {}
        for n in self.nodes:
            if n.name in replace:
                res = [replace[n.name]]
            elif n.type == "Parameter":
                res = [inputs[n.name]]
            elif n.type == "Const":
                res = [self._const(n.id)]
            elif n.type == "Result":
                res = [vals[n.inputs[0][0]][_port(self.nodes_by_id[n.inputs[0][0]], n.inputs[0][1])]]
            else:
                args = [vals[src][_port(self.nodes_by_id[src], port)] for src, port in n.inputs]
                out = OPS[n.type](n.attrs, *args)
                res = out if isinstance(out, list) and n.type == "VariadicSplit" else [out]
            vals[n.id] = res
            if n.name in want:
                got[n.name] = res[0]
                if len(got) == len(want):
                    break
        return got

    @property
    def nodes_by_id(self) -> dict[str, Node]:
        if not hasattr(self, "_by_id"):
            self._by_id = {n.id: n for n in self.nodes}
        return self._by_id


def _port(node: Node, port: str) -> int:
    return node.out_ports.index(port) if node.out_ports else 0
