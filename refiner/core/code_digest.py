"""Which ``refiner`` source files a module runs (its imports, transitively) and a content digest of them.

Clip preparation keys every step's record on the code it ran (:mod:`refiner.data.prepare`), the test stage each
clip's (:mod:`refiner.inference.heldout_shard`), and the test of the dvc.yaml deps (``tests/test_dvc_deps.py``)
checks each stage script's closure against its deps: all read the imports from the source (``ast``), so nothing is
imported to find them.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from functools import cache
from pathlib import Path

PACKAGE = "refiner"
ROOT = Path(__file__).resolve().parents[2]  # the folder holding the refiner package


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """The file of a ``refiner...`` module under ``root`` (a package → its __init__.py), None for other packages."""
    if name != PACKAGE and not name.startswith(f"{PACKAGE}."):
        return None
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imports_of(path: Path) -> set[str]:
    """Absolute module names imported anywhere in a file (``from a.b import c`` yields a.b and a.b.c)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def closure(start: Path, root: Path = ROOT) -> set[Path]:
    """Every refiner source file reached from the file ``start`` through imports (packages include their
    parents: importing a.b.c runs a/__init__ and a/b/__init__ too); ``start`` itself is not included."""
    seen: set[Path] = set()
    todo = [start]
    while todo:
        for name in imports_of(todo.pop()):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                f = module_file(".".join(parts[:i]), root)
                if f is not None and f not in seen:
                    seen.add(f)
                    todo.append(f)
    return seen


@cache
def code_digest(*modules: str) -> str:
    """SHA-256 over the relative names and bytes of the given refiner modules and everything they import."""
    files: set[Path] = set()
    for name in modules:
        f = module_file(name)
        if f is None:
            raise ValueError(f"{name} is not a module of the {PACKAGE} package under {ROOT}")
        files |= {f} | closure(f)
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(f.relative_to(ROOT).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


@cache
def plugin_digest(target: str) -> str:
    """Digest of a plug-in's code (``module:attr`` or ``module``): its refiner modules' closure, else its module
    file's bytes."""
    module = target.partition(":")[0]
    if module_file(module) is not None:
        return code_digest(module)
    spec = importlib.util.find_spec(module)
    origin = Path(spec.origin) if spec is not None and spec.origin else None
    if origin is None or not origin.is_file():
        raise ImportError(f"teacher plug-in {target}: module {module} not found; install the package that provides it")
    return hashlib.sha256(origin.read_bytes()).hexdigest()
