"""The package's layering, read from the imports under src/ (ast; nothing is imported).

Layers, lowest first: the leaves (``config.options`` and ``core.*``, importing only other leaves);
config (``config.*``) and the stage table (``registry``); the components (models, generation, training,
data, metrics, classify, export, serve); the stages (``stages.*``, one per command); the CLI. Every import
of a covertune module counts, at the top of a module or inside a function: a stage never imports another
stage (pipeline and sweep reach them through the registry), a component never imports a stage or the CLI,
a leaf never imports upward, no ``_private`` name is imported from another package, and the import graph
has no cycle (importing ``a.b.c`` also runs the package ``a.b``'s ``__init__``, which counts).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
COMPONENTS = ("models", "generation", "training", "data", "metrics", "classify", "export", "serve")


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(src: Path) -> dict[str, Path]:
    return {module_name(p, src): p for p in sorted((src / "covertune").rglob("*.py"))}


def imports(path: Path, name: str, known: set[str]) -> list[tuple[str, list[str], int]]:
    """(imported covertune module, names taken from it, line) for every import in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "covertune"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            if base.split(".")[0] != "covertune":
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.append((sub, [], node.lineno) if sub in known else (base, [a.name], node.lineno))
    return found


def graph(src: Path) -> tuple[dict[str, set[str]], list[tuple[str, str, str, int]]]:
    """Edges module -> module (with the package __init__s an import runs), and every (importer, module,
    name, line) of a name taken from a module."""
    mods = modules(src)
    edges: dict[str, set[str]] = {m: set() for m in mods}
    taken = []
    for name, path in mods.items():
        for target, names, line in imports(path, name, set(mods)):
            parts = target.split(".")
            for n in range(2, len(parts) + 1):  # a.b.c runs a.b's __init__ too (not one's own packages)
                dep = ".".join(parts[:n])
                if dep in mods and dep != name and not name.startswith(dep + "."):
                    edges[name].add(dep)
            taken += [(name, target, n, line) for n in names]
    return edges, taken


def layer(module: str) -> str:
    parts = module.split(".")
    if module == "covertune.config.options" or (len(parts) > 1 and parts[1] == "core"):
        return "leaf"
    if len(parts) > 1 and parts[1] == "stages":
        return "stage"
    if len(parts) > 1 and parts[1] in COMPONENTS:
        return "component"
    if module == "covertune.cli" or module == "covertune.__main__":
        return "cli"
    return "foundation"  # covertune, config.*, registry


def violations(src: Path) -> list[str]:
    edges, taken = graph(src)
    found = []
    for mod, deps in sorted(edges.items()):
        for dep in sorted(deps):
            if dep == "covertune":
                continue
            a, b = layer(mod), layer(dep)
            if a == "stage" and b == "stage" and not dep == "covertune.stages":
                found.append(f"stage {mod} imports the stage {dep} (reach stages through covertune.registry)")
            elif a == "component" and b in ("stage", "cli"):
                found.append(f"component {mod} imports {b} {dep}")
            elif a == "leaf" and b != "leaf":
                found.append(f"leaf {mod} imports {dep}, above it")
            elif a == "foundation" and b in ("stage", "component", "cli"):
                found.append(f"{mod} imports {b} {dep}, above it")
    for importer, target, name, line in taken:
        if name.startswith("_") and not name.startswith("__") and \
                importer.split(".")[:2] != target.split(".")[:2]:
            found.append(f"{importer} (line {line}) imports the private name {name} from {target}")
    found += [f"import cycle: {' -> '.join(c)}" for c in cycles(edges)]
    return found


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan), or a self-import."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in edges.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_layers_hold():
    assert violations(SRC) == []


def test_every_subpackage_names_its_public_api():
    for init in sorted((SRC / "covertune").glob("*/__init__.py")):
        tree = ast.parse(init.read_text(encoding="utf-8"))
        names = [t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)]
        assert "__all__" in names, f"{init.parent.name}/__init__.py has no __all__"


def plant(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / "covertune" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("files, expected", [
    ({"stages/a.py": "def run(cfg):\n    from covertune.stages import b\n", "stages/b.py": ""},
     "stage covertune.stages.a imports the stage covertune.stages.b"),
    ({"models/m.py": "from covertune.stages.a import run\n", "stages/a.py": "def run(cfg): pass\n"},
     "component covertune.models.m imports stage covertune.stages.a"),
    ({"core/io.py": "from covertune.models import load\n", "models/load.py": ""},
     "leaf covertune.core.io imports covertune.models.load, above it"),
    ({"generation/a.py": "from covertune.generation import b\n",
      "generation/b.py": "def f():\n    from covertune.generation.a import g\n"},
     "import cycle: covertune.generation.a -> covertune.generation.b"),
    ({"serve/x.py": "from covertune.models.load import _hidden\n", "models/load.py": "_hidden = 1\n"},
     "covertune.serve.x (line 1) imports the private name _hidden from covertune.models.load"),
])
def test_a_planted_violation_is_found(tmp_path, files, expected):
    """Each rule catches what it is for, in a throwaway tree."""
    src = plant(tmp_path, {"__init__.py": "", **files})
    assert any(v.startswith(expected) for v in violations(src)), violations(src)
