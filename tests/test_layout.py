"""The package layout the README's Layout section states: subpackages in layers, each importing only those above it."""

import re
from pathlib import Path

from refiner.core.code_digest import imports_of

ROOT = Path(__file__).resolve().parents[1]


def layers() -> list[str]:
    """The subpackages in the order of the README's layout tree."""
    block = (ROOT / "README.md").read_text().split("## Layout", 1)[1].split("```")[1]
    return re.findall(r"^  (\w+)/ ", block, flags=re.M)


def imported_subpackages(path: Path) -> set[str]:
    """The ``refiner.<subpackage>`` names a module imports anywhere (also inside functions)."""
    return {name.split(".")[1] for name in imports_of(path) if name.startswith("refiner.")}


def test_the_readme_lists_every_subpackage_and_nothing_else():
    on_disk = {p.name for p in (ROOT / "refiner").iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert sorted(layers()) == sorted(on_disk)


def test_every_subpackage_imports_only_those_above_it():
    order = layers()
    upward = []
    for path in sorted((ROOT / "refiner").rglob("*.py")):
        parts = path.relative_to(ROOT / "refiner").parts
        if len(parts) < 2:
            continue
        own = parts[0]
        upward += [
            f"{path.relative_to(ROOT)} imports refiner.{s}"
            for s in imported_subpackages(path)
            if s in order and order.index(s) > order.index(own)
        ]
    assert upward == []
