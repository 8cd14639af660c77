"""The package's shape: imports follow the layer order declared in docs/architecture.md.

Every import in femplast/ (module level and inside functions) is parsed with ``ast``; an edge
from a lower layer to a higher one, or any import cycle between modules, fails.
"""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "femplast"


def declared_layers() -> list[list[str]]:
    """The ``layers`` block of docs/architecture.md: one layer per line, lowest first."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = re.search(r"```layers\n(.*?)```", text, re.S)
    assert block, "docs/architecture.md has no ```layers block"
    layers = []
    for line in block.group(1).splitlines():
        line = line.split("#")[0].strip()
        if line:
            layers.append(line.split())
    return layers


def modules(pkg: Path = PKG) -> dict[str, Path]:
    out = {}
    for f in pkg.rglob("*.py"):
        parts = f.relative_to(pkg.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def import_edges(pkg: Path = PKG) -> dict[str, set[str]]:
    """Module -> femplast modules it imports (anywhere in the file)."""
    mods = modules(pkg)
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        pkg = m if f.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(f.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                # importing a submodule runs its package's __init__: count the deepest hit only
                if t and t != m:
                    edges[m].add(t)
    return edges


def layer_index(layers: list[list[str]], module: str) -> int:
    best, idx = -1, None
    for i, names in enumerate(layers):
        for n in names:
            # the root package stands for its facade (__init__) only, not for everything
            sub = module.startswith(n + ".") and n != PKG.name
            if (module == n or sub) and len(n) > best:
                best, idx = len(n), i
    assert idx is not None, f"{module} is in no layer of docs/architecture.md"
    return idx


def test_every_module_has_a_layer():
    layers = declared_layers()
    for m in modules():
        layer_index(layers, m)


def test_imports_go_down_the_layers():
    layers = declared_layers()
    bad = []
    for a, targets in import_edges().items():
        for b in targets:
            if b == "femplast" and a != "femplast":
                bad.append(f"{a} -> femplast (the package facade is the top layer)")
            elif layer_index(layers, b) > layer_index(layers, a):
                bad.append(f"{a} -> {b}")
    assert not bad, "imports against the declared layer order:\n" + "\n".join(sorted(bad))


def test_no_import_cycles():
    edges = import_edges()
    for m in edges:  # the facade imports its subpackages; __init__ modules only re-export
        edges[m] = {t for t in edges[m] if not (m.startswith(t + ".") or t.startswith(m + "."))}
    state: dict[str, int] = {}
    cycles = []

    def visit(v, path):
        state[v] = 1
        for w in edges[v]:
            if state.get(w) == 1:
                cycles.append(" -> ".join(path[path.index(w):] + [w]))
            elif w not in state:
                visit(w, path + [w])
        state[v] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checker_flags_an_upward_import_inside_a_function(tmp_path):
    """Imports inside functions count (they hid the old cycles)."""
    pkg = tmp_path / "femplast"
    (pkg / "fe").mkdir(parents=True)
    (pkg / "app").mkdir()
    for f in ("__init__.py", "fe/__init__.py", "app/__init__.py", "app/runner.py"):
        (pkg / f).write_text("")
    (pkg / "fe" / "mesh.py").write_text("def f():\n    from femplast.app.runner import x\n")
    edges = import_edges(pkg)
    assert edges["femplast.fe.mesh"] == {"femplast.app.runner"}
    layers = declared_layers()
    assert layer_index(layers, "femplast.app.runner") > layer_index(layers, "femplast.fe.mesh")


def test_functions_are_short_and_take_few_parameters():
    """No function in femplast/ longer than 80 lines or with more than 12 parameters
    (compiled kernels take bundles: femplast.tensorial.aqs, femplast.scalar.model)."""
    bad = []
    for m, f in modules().items():
        for node in ast.walk(ast.parse(f.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            lines = node.end_lineno - node.lineno + 1
            a = node.args
            n = (len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + bool(a.vararg)
                 + bool(a.kwarg))
            if a.args and a.args[0].arg in ("self", "cls"):
                n -= 1
            if lines > 80 or n > 12:
                bad.append(f"{m}.{node.name}: {lines} lines, {n} parameters")
    assert not bad, "\n".join(bad)
