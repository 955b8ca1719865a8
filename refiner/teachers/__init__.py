"""Frozen single-frame teachers, chosen by ``teacher.name`` in params.yaml."""

from __future__ import annotations

from refiner.config import TeacherParams
from refiner.teachers.base import Teacher, TeacherFrame

NAMES = ("simulated", "unidepth")


def make_teacher(p: TeacherParams) -> Teacher:
    """The teacher named by ``p.name``: ``simulated`` (the synthetic stand-in) or ``unidepth`` (UniDepthV2)."""
    if p.name == "simulated":
        from refiner.teachers.simulated import SimulatedTeacher

        return SimulatedTeacher(p)
    if p.name == "unidepth":
        from refiner.teachers.unidepth import UniDepthTeacher

        return UniDepthTeacher(p)
    raise ValueError(f"teacher.name {p.name!r} is not one of {NAMES}")


__all__ = ["NAMES", "Teacher", "TeacherFrame", "make_teacher"]
