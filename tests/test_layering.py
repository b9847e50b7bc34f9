"""The layering of docs/ARCHITECTURE.md, checked mechanically.

Layers, lowest first (a module imports only from its own layer or a lower one):

    L0  config, errors, paths, files, the package root (``llmos.__version__``, ``llmos.LlmosError``)
    L1  models, text, store
    L2  data, checkpoint
    L3  train, inference, compress
    L4  recipes, apps, serve
    L5  cli, __main__

Two more rules: no recipe imports another recipe (a recipe is wiring; what two recipes share is
library code in a lower layer), and the server does not import recipes.

Every import counts, wherever it is written: at module level, inside a function (a lazy import
is still a dependency) or under ``TYPE_CHECKING``. The exceptions are listed in ``ALLOWED``,
each with the reason or the issue item that removes it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import llmos

SRC = Path(llmos.__file__).resolve().parent
LAYERS = {
    "config": 0,
    "errors": 0,
    "paths": 0,
    "files": 0,
    "models": 1,
    "text": 1,
    "store": 1,
    "data": 2,
    "checkpoint": 2,
    "train": 3,
    "inference": 3,
    "compress": 3,
    "recipes": 4,
    "apps": 4,
    "serve": 4,
    "jobs": 4,
    "cli": 5,
    "__main__": 5,
}
# Modules not imported by the import test: __main__ runs the CLI when imported, and alembic
# runs the migrations (their env.py needs alembic's context).
NOT_IMPORTED = ("llmos.__main__", "llmos.store.migrations")

# (importer, imported) -> why it is allowed. Keep this short: each entry is a debt or a decision.
ALLOWED: dict[tuple[str, str], str] = {
    # Decision: `llmos.load` is the Python API (DESIGN.md "Python API"): the package root stays
    # at L0 for everything that imports llmos.errors or the version, and reaches up to the
    # inference engine only inside load() (and for its return type, under TYPE_CHECKING).
    ("llmos", "llmos.inference.load"): "the llmos.load facade (lazy)",
    ("llmos", "llmos.inference.encoder"): "llmos.load's return type (TYPE_CHECKING only)",
    ("llmos", "llmos.inference.generator"): "llmos.load's return type (TYPE_CHECKING only)",
    ("llmos", "llmos.inference.image"): "llmos.load's return type (TYPE_CHECKING only)",
    ("llmos", "llmos.inference.zeroshot"): "the llmos.zero_shot facade (lazy)",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every module of the package, by dotted name (migrations left out)."""
    found = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}
    return {m: p for m, p in found.items() if not m.startswith("llmos.store.migrations")}


def layer(module: str) -> int:
    """The layer of a dotted module name; the package root is L0."""
    parts = module.split(".")
    if len(parts) == 1:
        return 0
    assert parts[1] in LAYERS, f"{module}: no layer for {parts[1]!r}; add it to LAYERS"
    return LAYERS[parts[1]]


def imports(path: Path, top_level_only: bool = False) -> list[tuple[str, int]]:
    """The llmos modules a file imports, with line numbers (absolute imports; ``from llmos
    import x`` counts as importing ``llmos.x`` when x is a subpackage or module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out = []
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: use absolute imports"
            if node.module == "llmos":
                names = [
                    f"llmos.{a.name}"
                    if (SRC / a.name).is_dir() or (SRC / f"{a.name}.py").is_file()
                    else "llmos"
                    for a in node.names
                ]
            else:
                names = [node.module or ""]
        else:
            continue
        out += [(n, node.lineno) for n in names if n == "llmos" or n.startswith("llmos.")]
    return out


def is_within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_every_module_imports_in_a_fresh_interpreter_in_layer_order() -> None:
    """One interpreter imports every module, lowest layer first: an import error or an import
    loop that only shows from a cold start fails here."""
    names = sorted(
        (m for m in modules() if not any(is_within(m, n) for n in NOT_IMPORTED)),
        key=lambda m: (layer(m), m),
    )
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    proc = subprocess.run(
        [sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` (module -> the modules it imports) as a path, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                return [*path[path.index(t) :], t]
            if t not in state and (cycle := visit(t, [*path, t])):
                return cycle
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m, [m])):
            return cycle
    return None


def test_no_import_cycles_between_modules() -> None:
    """Module-level imports form no cycle (so no module depends on import order)."""
    found = modules()
    graph = {
        m: {t for t, _ in imports(p, top_level_only=True) if t in found and t != m}
        for m, p in found.items()
    }
    assert find_cycle(graph) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def violations() -> list[str]:
    out = []
    for m, path in modules().items():
        for target, line in imports(path):
            where = f"{path.relative_to(SRC.parent)}:{line}: {m} imports {target}"
            if (m, target) in ALLOWED:
                continue
            if layer(target) > layer(m):
                out.append(f"{where} (L{layer(m)} -> L{layer(target)})")
            recipe = is_within(target, "llmos.recipes") and target not in ("llmos.recipes", m)
            if is_within(m, "llmos.recipes") and recipe:
                out.append(f"{where} (a recipe imports another recipe)")
            if is_within(m, "llmos.serve") and is_within(target, "llmos.recipes"):
                out.append(f"{where} (the server imports a recipe)")
    return out


def test_no_module_imports_from_a_higher_layer() -> None:
    assert violations() == []


def test_the_allow_list_holds_no_stale_entries() -> None:
    """Each allowed import still exists: a debt paid is removed from the list."""
    found = modules()
    present = {(m, t) for m, p in found.items() for t, _ in imports(p)}
    assert [pair for pair in ALLOWED if pair not in present] == []


def test_the_checker_sees_violations(tmp_path: Path) -> None:
    """The import parser finds lazy, TYPE_CHECKING and ``from llmos import x`` imports."""
    f = tmp_path / "m.py"
    f.write_text(
        "from typing import TYPE_CHECKING\n"
        "from llmos import recipes, errors\n"
        "if TYPE_CHECKING:\n    from llmos.serve.app import create_app\n"
        "def f():\n    import llmos.cli\n",
        encoding="utf-8",
    )
    assert [t for t, _ in imports(f)] == [
        "llmos.recipes",
        "llmos.errors",
        "llmos.serve.app",
        "llmos.cli",
    ]
    assert [t for t, _ in imports(f, top_level_only=True)] == ["llmos.recipes", "llmos.errors"]
