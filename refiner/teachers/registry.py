"""Finding a teacher by name: entry points of the group ``refiner.teachers``, or a ``module:attr`` path.

The built-in teachers (``simulated``, ``learned``, ``unidepth``) are registered the same way as any plug-in, in
this project's ``pyproject.toml``; a package outside this repository adds its own with

    [project.entry-points."refiner.teachers"]
    mine = "my_pkg.teacher:MyTeacher"

and ``teacher.name: mine`` (or a clip's ``teacher: mine``) then runs it. ``teacher.name: my_pkg.teacher:MyTeacher``
names a factory without registering it. Either way the factory is called with a
:class:`~refiner.teachers.base.TeacherContext` and must return a :class:`~refiner.teachers.base.Teacher`.
Names are looked up in :mod:`refiner.core.plugins`.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Callable
from typing import Any

from refiner.core.plugins import PATH, registered, unknown_teacher
from refiner.teachers.base import Teacher, TeacherContext


def load_factory(name: str) -> Callable[[TeacherContext], Teacher]:
    """The factory behind ``name`` (imported now)."""
    target = registered().get(name) or (name if PATH.match(name) else None)
    if target is None:
        raise ValueError(unknown_teacher(name))
    module, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"teacher {name!r}: cannot import {module} ({e}); install the package that provides it"
        ) from e
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ImportError(f"teacher {name!r}: {module} has no attribute {attr!r}; check the name in {target}")
        obj = getattr(obj, part)
    return obj


def make_teacher(name: str, ctx: TeacherContext) -> Teacher:
    """Build the teacher ``name`` for one clip and check it offers the interface."""
    teacher = load_factory(name)(ctx)
    missing = [a for a in ("name", "label", "batch_size", "predict", "identity") if not hasattr(teacher, a)]
    if missing:
        raise TypeError(f"teacher {name!r} lacks {', '.join(missing)} of refiner.teachers.base.Teacher")
    if not isinstance(teacher.batch_size, int) or teacher.batch_size < 1:
        raise TypeError(f"teacher {name!r}: batch_size must be a positive integer, not {teacher.batch_size!r}")
    return teacher


def teacher_id(teacher: Teacher) -> str:
    """``name:digest`` of the teacher's identity: two stores share a calibration table only when this is equal."""
    identity = json.dumps(teacher.identity(), sort_keys=True, default=str)
    return f"{teacher.name}:{hashlib.sha256(identity.encode()).hexdigest()[:16]}"
