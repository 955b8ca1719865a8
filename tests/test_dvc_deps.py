"""dvc.yaml deps cannot silently go stale: every `refiner` module a stage script imports (transitively) must be
a dep of that stage, itself or through a folder that holds it."""

from pathlib import Path

import pytest
import yaml

from refiner.core.code_digest import closure
from refiner.core.errors import repro_target

ROOT = Path(__file__).resolve().parents[1]


def pipeline_files() -> list[Path]:
    """The root dvc.yaml and the per-shard stages' pipelines/<stage>/dvc.yaml."""
    return [ROOT / "dvc.yaml", *sorted((ROOT / "pipelines").glob("*/dvc.yaml"))]


def stage_bodies() -> list[tuple[Path, str, dict]]:
    """(file, stage name, the stage's body: its ``do`` for a foreach) of every stage in every dvc.yaml."""
    out = []
    for path in pipeline_files():
        for name, stage in yaml.safe_load(path.read_text())["stages"].items():
            out.append((path, name, stage.get("do", stage)))
    return out


def stages() -> list[tuple[str, Path, list[str]]]:
    out = []
    for _, name, body in stage_bodies():
        script = next(w for w in body["cmd"].split() if w.startswith("stages/"))
        out.append((name, ROOT / script, [d if isinstance(d, str) else next(iter(d)) for d in body.get("deps", [])]))
    return out


def test_every_stage_runs_from_the_repository_root():
    """Stage paths (cmd, deps, outs) are written from the root, so a dvc.yaml elsewhere must set wdir to it and
    read the root params.yaml for its ${...} values; every stage script is a stage of exactly one file."""
    names = [name for _, name, _ in stage_bodies()]
    assert len(names) == len(set(names)) and len(names) >= 6
    for path, name, body in stage_bodies():
        wdir = (path.parent / body.get("wdir", ".")).resolve()
        assert wdir == ROOT, f"{path}: stage {name} does not run from the repository root"
        if path.parent != ROOT:
            assert yaml.safe_load(path.read_text())["vars"] == ["../../params.yaml"], path


def covers(dep: Path, file: Path) -> bool:
    """A dep covers a file that is itself or lies in it."""
    return file == dep or dep in file.parents


def missing_deps(script: Path, deps: list[str]) -> list[str]:
    return sorted(str(f.relative_to(ROOT)) for f in closure(script) if not any(covers(ROOT / d, f) for d in deps))


def test_repro_targets_of_error_messages_name_real_stages():
    """Error messages tell users what to pass to `dvc repro` (:func:`refiner.core.errors.repro_target`): a per-shard
    stage through its own file, a corpus-wide one by name."""
    for path, name, _ in stage_bodies():
        per_shard = path.parent != ROOT
        target = repro_target(name, "0" if per_shard else None)
        expected = f"{path.relative_to(ROOT)}:{name}@0" if per_shard else name
        assert target == expected


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
    script.write_text("from refiner.evaluation.depth_metrics import flicker\n")
    assert "refiner/evaluation/depth_metrics.py" in missing_deps(script, [])
    assert missing_deps(script, ["refiner"]) == []
