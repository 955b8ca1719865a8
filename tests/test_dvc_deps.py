"""dvc.yaml deps cannot silently go stale: every `refiner` module a stage script imports (transitively) must be
a dep of that stage, itself or through a folder that holds it."""

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def module_file(name: str) -> Path | None:
    """The file of a `refiner...` module (package → its __init__.py), None for other packages."""
    if name != "refiner" and not name.startswith("refiner."):
        return None
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imports_of(path: Path) -> set[str]:
    """Absolute module names imported by a file (``from a.b import c`` yields a.b and a.b.c)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def closure(script: Path) -> set[Path]:
    """Every refiner source file reached from ``script`` through imports (packages include their parents)."""
    seen, todo = set(), [script]
    while todo:
        for name in imports_of(todo.pop()):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
                f = module_file(".".join(parts[:i]))
                if f is not None and f not in seen:
                    seen.add(f)
                    todo.append(f)
    return seen


def stages() -> list[tuple[str, Path, list[str]]]:
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    out = []
    for name, stage in spec.items():
        body = stage.get("do", stage)
        script = next(w for w in body["cmd"].split() if w.startswith("stages/"))
        out.append((name, ROOT / script, [d if isinstance(d, str) else next(iter(d)) for d in body.get("deps", [])]))
    return out


def covers(dep: Path, file: Path) -> bool:
    """A dep covers a file that is itself or lies in it."""
    return file == dep or dep in file.parents


def missing_deps(script: Path, deps: list[str]) -> list[str]:
    return sorted(str(f.relative_to(ROOT)) for f in closure(script) if not any(covers(ROOT / d, f) for d in deps))


@pytest.mark.parametrize("name,script,deps", stages(), ids=[s[0] for s in stages()])
def test_every_imported_module_is_a_dep(name, script, deps):
    assert str(script.relative_to(ROOT)) in deps, f"stage {name}: its script is not a dep"
    assert missing_deps(script, deps) == [], f"stage {name}: add these to its deps in dvc.yaml"


@pytest.mark.parametrize("name,script,deps", stages(), ids=[s[0] for s in stages()])
def test_no_refiner_dep_is_unused(name, script, deps):
    """A module the stage no longer imports only makes it re-run for nothing."""
    files = closure(script)
    unused = [d for d in deps if d.startswith("refiner") and not any(covers(ROOT / d, f) for f in files)]
    assert unused == [], f"stage {name}: remove these from its deps in dvc.yaml"


def test_the_check_catches_a_new_import(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text("from refiner.metrics import flicker\n")
    assert "refiner/metrics.py" in missing_deps(script, [])
    assert missing_deps(script, ["refiner"]) == []
