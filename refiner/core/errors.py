"""One-line errors for stage scripts: ``error: <message>`` on stderr and exit status 1, and the ``dvc repro``
targets those messages tell the user to run.

Set ``REFINER_DEBUG=1`` to get the full traceback instead (the exit status is still 1).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import yaml


def run_stage(main: Callable[[], object]) -> None:
    """Run ``main``; on an exception print one line (or the traceback with REFINER_DEBUG=1) and exit 1.

    Ctrl-C exits 130 with ``error: interrupted``. Stage scripts take paths only, so an option (``--help``) prints
    the script's docstring and exits 2 instead of being taken for an output folder.
    """
    script = sys.modules[main.__module__]
    if Path(getattr(script, "__file__", "")).parent.name == "stages" and any(a.startswith("-") for a in sys.argv[1:]):
        doc = script.__doc__ or ""
        print(
            f"{doc.strip()}\n\nStage scripts take no options; DVC runs them with the paths in dvc.yaml.",
            file=sys.stderr,
        )
        sys.exit(2)
    try:
        main()
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 (the point: any failure becomes one line)
        # a Zarr write that failed part-way leaves chunk writes pending on Zarr's event loop; asyncio would log each
        # as "Task was destroyed but it is pending!" at exit, after the one line
        logging.getLogger("asyncio").disabled = True
        if os.environ.get("REFINER_DEBUG") == "1":
            traceback.print_exc()
        else:
            message = " ".join(str(e).split()) or type(e).__name__
            print(f"error: {message}", file=sys.stderr)
        sys.exit(1)


def repro_target(stage: str, item: str | None = None) -> str:
    """What to pass to ``dvc repro`` for a stage: a corpus-wide stage by its name, one shard of a per-shard stage
    (``item``: the shard) through its own file, ``pipelines/<stage>/dvc.yaml`` (see the root dvc.yaml)."""
    return stage if item is None else f"pipelines/{stage}/dvc.yaml:{stage}@{item}"


def writer_target(path: str | Path) -> str | None:
    """The ``dvc repro`` target of the stage whose dvc.yaml (the root one or ``pipelines/*/dvc.yaml``, read from
    the working directory) lists ``path``, or a folder holding it, among its outputs; None for a path no stage
    writes (e.g. a cache of refiner-video)."""
    try:
        rel = Path(path).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return None
    for dvc_file in [Path("dvc.yaml"), *sorted(Path("pipelines").glob("*/dvc.yaml"))]:
        stages = (yaml.safe_load(dvc_file.read_text()) or {}).get("stages", {}) if dvc_file.is_file() else {}
        for stage, spec in stages.items():
            body = spec.get("do", spec)
            for out in [o for kind in ("outs", "metrics", "plots") for o in body.get(kind) or []]:
                template = re.escape(out if isinstance(out, str) else next(iter(out)))
                for var in (re.escape("${item}"), re.escape("${key}")):
                    template = template.replace(var, "(?P<item>[^/]+)", 1).replace(var, "(?P=item)")
                m = re.fullmatch(template + "(?:/.+)?", rel)  # the output itself or a file in it
                if m:
                    return repro_target(stage, m.groupdict().get("item"))
    return None


def raise_failures(failures: list[str], tried: int) -> None:
    """After every clip of a stage has had its turn: print all but the first failure, raise the first as one line
    (the clips that succeeded are done and are skipped when the stage runs again)."""
    for line in failures[1:]:
        print(f"failed: {line}", file=sys.stderr)
    if failures:
        raise RuntimeError(
            f"{failures[0]} ({len(failures)} of {tried} clips failed; the others are done and are skipped "
            "when the stage runs again)"
        )
