"""One-line errors for stage scripts: ``error: <message>`` on stderr and exit status 1, and the ``dvc repro``
targets those messages tell the user to run.

Set ``REFINER_DEBUG=1`` to get the full traceback instead (the exit status is still 1).
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable


def run_stage(main: Callable[[], object]) -> None:
    """Run ``main``; on an exception print one line (or the traceback with REFINER_DEBUG=1) and exit 1.

    Ctrl-C exits 130 with ``error: interrupted``.
    """
    try:
        main()
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 (the point: any failure becomes one line)
        if os.environ.get("REFINER_DEBUG") == "1":
            traceback.print_exc()
        else:
            message = " ".join(str(e).split()) or type(e).__name__
            print(f"error: {message}", file=sys.stderr)
        sys.exit(1)


def repro_target(stage: str, clip: str | None = None) -> str:
    """What to pass to ``dvc repro`` for a stage: a corpus-wide stage by its name, a per-clip one through its own
    file (each per-clip stage is ``pipelines/<stage>/dvc.yaml``; see the root dvc.yaml)."""
    return stage if clip is None else f"pipelines/{stage}/dvc.yaml:{stage}@{clip}"
