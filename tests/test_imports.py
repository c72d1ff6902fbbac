"""The package's shape: its import graph has no circle (every import counts, those inside functions included: an
import moved into a function hides a circle from Python, not from a reader); only the command line imports the
command line; the application layer is the one door from an entry point to the pipeline; no module over 400 lines,
no function over 80."""
from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "difp_stream"


def _modules() -> dict[str, Path]:
    mods = {}
    for p in PACKAGE.rglob("*.py"):
        parts = p.relative_to(PACKAGE.parent).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return mods


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (``from .x import name`` counts as x, or x.name when that is a
    module)."""
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                mod = ".".join(base + ([node.module] if node.module else []))
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for t in targets:
                while t not in mods and "." in t:
                    t = t.rpartition(".")[0]
                if t in mods and t != name:
                    deps.add(t)
        graph[name] = deps
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_finder_sees_a_circle_hidden_in_a_function():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(g) == [["a", "b", "c"]]
    graph = import_graph()
    assert "difp_stream.difp.stylespace" in graph["difp_stream.difp.registry"]  # a top-level relative import
    assert "difp_stream.runtime.tensorrt" in graph["difp_stream.runtime.backends"]  # one inside a function


def test_no_import_circle_in_the_package():
    assert circles(import_graph()) == []


def test_nothing_below_the_command_line_imports_it():
    """``cli/`` turns argv into options; ``app/``, ``serve/`` and the rest never reach back into it."""
    graph = import_graph()
    back = {m: sorted(d for d in deps if d.startswith("difp_stream.cli")) for m, deps in graph.items()
            if not m.startswith("difp_stream.cli") and m != "difp_stream.__main__"}
    assert {m: d for m, d in back.items() if d} == {}


def test_entry_points_build_through_the_application_layer():
    """The command line, serve's camera workers and model replicas, and the benchmark reach the model through
    ``app`` (``app.build`` is the only module below them that makes a Protector or selects a backend)."""
    graph = import_graph()
    for entry in ("difp_stream.cli.protect", "difp_stream.serve.cameras", "difp_stream.serve.service",
                  "difp_stream.app.benchmark"):
        assert any(d.startswith("difp_stream.app") for d in graph[entry]), entry
    makers = {m for m, p in _modules().items()
              if "Protector(" in p.read_text().replace("FaceProtector(", "").replace("ServiceProtector(", "")
              and not m.startswith(("difp_stream.difp", "difp_stream.train"))}  # (training: its own teacher)
    assert makers == {"difp_stream.app.build"}, makers
    selectors = {m for m, p in _modules().items() if re.search(r"(?<![\w.])select\(", p.read_text())
                 and not m.startswith(("difp_stream.runtime", "difp_stream.train", "difp_stream.cli.train"))}
    assert selectors == {"difp_stream.app.build"}, selectors


def test_no_module_over_400_lines_and_no_function_over_80():
    long_files = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
                  if (n := len(p.read_text().splitlines())) > 400}
    long_functions = {}
    for p in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long_functions[f"{p.relative_to(PACKAGE)}:{node.name}"] = node.end_lineno - node.lineno + 1
    assert long_files == {} and long_functions == {}


def test_imports_inside_functions_are_the_optional_gpu_parts_only():
    """Package modules are imported at the top; inside a function only what needs an optional GPU stack (TensorRT,
    CUDA graphs), each with its reason."""
    inside = set()
    for name, path in _modules().items():
        text = path.read_text()
        lines = text.splitlines()
        for fn in ast.walk(ast.parse(text)):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, ast.ImportFrom) and node.level:
                        assert "#" in lines[node.lineno - 1], (name, node.lineno)  # says why
                        inside.add(node.module)
    assert inside <= {"tensorrt", "cuda_graphs", "runtime.tensorrt"}, inside
