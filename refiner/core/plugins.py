"""Teacher names: the entry points of the group ``refiner.teachers`` and ``module:attr`` paths.

Reads package metadata only (no teacher, no torch is imported), so params.yaml is validated against it cheaply;
:mod:`refiner.teachers.registry` builds the teachers.
"""

from __future__ import annotations

import re
from functools import cache
from importlib.metadata import entry_points

GROUP = "refiner.teachers"
PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")  # module.sub:attr.sub
REINSTALL = "reinstall the project (`pip install -e .`, which setup.sh does) so its entry points are registered"


@cache
def registered() -> dict[str, str]:
    """{name: "module:attr"} of every teacher registered in the entry-point group (sorted by name)."""
    return {ep.name: ep.value for ep in sorted(entry_points(group=GROUP), key=lambda ep: ep.name)}


def is_teacher_name(name: str) -> bool:
    """Whether ``name`` is a registered teacher or a ``module:attr`` path."""
    return name in registered() or bool(PATH.match(name))


def teacher_choices() -> str:
    """What a teacher name may be, for messages."""
    return f"a registered teacher ({', '.join(registered()) or 'none'}; entry points {GROUP}) or module:attr"


def unknown_teacher(name: str) -> str:
    """The message for a name that is neither registered nor a path."""
    return f"no teacher named {name!r}; use {teacher_choices()} of a teacher factory (built-in missing: {REINSTALL})"
