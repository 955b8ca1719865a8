"""Frozen single-frame teachers: the interface (:mod:`~refiner.teachers.base`), plug-ins found by name
(:mod:`~refiner.teachers.registry`), and the built-in ones: ``simulated`` (a formula of a single-frame model's
errors, the synthetic stand-in), ``learned`` (a small network trained here on rendered scenes) and ``unidepth``
(UniDepthV2 through its own package)."""

from refiner.teachers.base import Teacher, TeacherBatch, TeacherContext, TeacherFrame
from refiner.teachers.registry import make_teacher, teacher_id

__all__ = ["Teacher", "TeacherBatch", "TeacherContext", "TeacherFrame", "make_teacher", "teacher_id"]
