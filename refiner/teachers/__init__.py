"""Frozen single-frame teachers, chosen by ``teacher.name`` in params.yaml."""

from __future__ import annotations

from typing import TYPE_CHECKING

from refiner.choices import TEACHER_NAMES
from refiner.teachers.base import Teacher, TeacherFrame

if TYPE_CHECKING:
    from refiner.config import TeacherParams

NAMES = TEACHER_NAMES  # refiner.choices


def make_teacher(p: TeacherParams, clip_name: str) -> Teacher:
    """The teacher named by ``p.name`` for the clip ``clip_name``: ``simulated`` (the synthetic stand-in, which
    draws its error model and error sequence from (p.seed, clip_name)) or ``unidepth`` (UniDepthV2; ignores it)."""
    if p.name == "simulated":
        from refiner.teachers.simulated import SimulatedTeacher

        return SimulatedTeacher(p, clip_name)
    if p.name == "unidepth":
        from refiner.teachers.unidepth import UniDepthTeacher

        return UniDepthTeacher(p)
    raise ValueError(f"teacher.name {p.name!r} is not one of {NAMES}")


__all__ = ["NAMES", "Teacher", "TeacherFrame", "make_teacher"]
