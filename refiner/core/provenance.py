"""What a clip's figures are about, in one place: whether its frames and its depth ground truth are rendered or
real, and which teacher gave its input depth.

- ``frames``: ``rendered`` for the project's own scenes (:mod:`refiner.data.synth`, also when their video is decoded as
  a plain video with their ground truth) and Hypersim (photorealistic renders), ``real`` for TUM RGB-D and any
  other video;
- ``depth_gt``: ``rendered`` or ``real`` like the frames it comes with, ``none`` without ground truth;
- ``teacher``: its name and its one-line label (the teacher store's ``teacher_label`` attribute, else the name).

:func:`describe` says it in words per clip, :func:`corpus_kinds` counts each kind of a set of clips.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

RENDERED_DATASETS = ("synthetic", "hypersim")
SYNTH_GT = "rendered by refiner.data.synth"  # in the description refiner.data.synth gives its ground truth
DATASET_WORDS = {"synthetic": "synthetic", "tum": "TUM", "hypersim": "Hypersim", "video": "video"}
GT_WORDS = {"rendered": "rendered depth GT", "real": "real depth GT", "none": "no depth GT"}


def clip_provenance(decoded_attrs: Mapping[str, Any], has_gt: bool, teacher_attrs: Mapping[str, Any]) -> dict:
    """The provenance fields of a clip from its decoded and teacher stores' attributes."""
    dataset = str(decoded_attrs.get("dataset_name", "video"))
    rendered = dataset in RENDERED_DATASETS or SYNTH_GT in str(decoded_attrs.get("gt_description", ""))
    frames = "rendered" if rendered else "real"
    name = str(teacher_attrs.get("teacher", "unknown"))
    return {
        "dataset": dataset,
        "frames": frames,
        "depth_gt": frames if has_gt else "none",
        "teacher": {"name": name, "label": str(teacher_attrs.get("teacher_label") or name)},
    }


def _kind(p: Mapping[str, Any], count: int | None = None) -> str:
    """'real TUM clip (real depth GT) with the simulated teacher'; with ``count``, counted ('2 ... clips ...')."""
    noun = "clip" if count in (None, 1) else "clips"
    dataset = DATASET_WORDS.get(p["dataset"], p["dataset"])
    words = f"{p['frames']} {dataset} {noun} ({GT_WORDS[p['depth_gt']]}) with the {p['teacher']['name']} teacher"
    return words if count is None else f"{count} {words}"


def describe(p: Mapping[str, Any]) -> str:
    """One clip in words, e.g. 'real TUM clip (real depth GT) with the simulated teacher: <its label>'."""
    teacher = p["teacher"]
    return _kind(p) + (f": {teacher['label']}" if teacher["label"] != teacher["name"] else "")


def corpus_kinds(provenances: Iterable[Mapping[str, Any]]) -> str:
    """Each kind of clip present with its count, in order of first appearance, e.g. '2 rendered synthetic clips
    (rendered depth GT) with the simulated teacher, 1 real TUM clip (real depth GT) with the simulated teacher'."""
    first: dict[tuple, Mapping[str, Any]] = {}
    counts: Counter[tuple] = Counter()
    for p in provenances:
        key = (p["frames"], p["dataset"], p["depth_gt"], p["teacher"]["name"])
        first.setdefault(key, p)
        counts[key] += 1
    return ", ".join(_kind(first[key], n) for key, n in counts.items())


def caveat(provenances: Iterable[Mapping[str, Any]]) -> str | None:
    """The plain warning a report carries when any clip's frames are rendered, else None."""
    if any(p["frames"] == "rendered" for p in provenances):
        return (
            "Rendered clips are stand-ins: figures on them describe the pipeline on rendered scenes, not performance "
            "on real video."
        )
    return None
