"""The ``corpus`` section of params.yaml: every clip by name, its split, and the defaults of synthetic clips."""

from __future__ import annotations

import re
from typing import Any, Literal, Self

from pydantic import ConfigDict, Field, ValidationError, model_validator

from refiner.core.choices import CAMERA_PATHS, CLIP_KINDS, SOURCE_KINDS
from refiner.core.config_messages import Problem, bad, join, problem
from refiner.core.params_base import ConfigError, NonNeg, Num, Pos, Section, Seq, Size, Str

SPLITS = ("train", "val", "test")


CLIP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


class SyntheticDefaults(Section):
    """Settings of every synthetic clip (``corpus.synthetic``); a clip may override any of them."""

    width: Size
    height: Size
    frames: int = Field(ge=2)
    static_frames: int = Field(ge=0)
    fps: int = Field(ge=1, le=240)
    fov_deg: Num = Field(gt=1, lt=170)
    baseline_m: Num = Field(gt=0, le=1)
    crf: int = Field(ge=0, le=51)
    camera_path: Literal[CAMERA_PATHS]  # type: ignore[valid-type]
    object_speed: NonNeg
    sensor_noise: NonNeg
    exposure_jitter: NonNeg

    @model_validator(mode="after")
    def _static_within(self) -> Self:
        if self.static_frames > self.frames:
            raise bad("static_frames", self.static_frames, f"integer in [0, frames={self.frames}]")
        return self


class CameraSpec(Section):
    """Pinhole intrinsics in pixels of a data set's images."""

    fx: Pos
    fy: Pos
    cx: Pos
    cy: Pos


_NEEDS = {"synthetic": ("seed",), "video": ("source", "intrinsics")}  # other kinds: source
_ONLY_FOR = {"seed": ("synthetic",), "source": SOURCE_KINDS, "intrinsics": ("video",), "gt": ("video",)}
_ONLY_FOR["camera"] = tuple(k for k in SOURCE_KINDS if k != "video")


class ClipSpec(Section):
    """One clip of ``corpus.clips``; keys beyond the fields are synthetic overrides (:attr:`overrides`)."""

    model_config = ConfigDict(extra="allow")
    kind: Literal[CLIP_KINDS]  # type: ignore[valid-type]
    seed: int | None = Field(default=None, ge=0)
    source: Str | None = None
    intrinsics: Str | None = None
    gt: Str | None = None
    camera: CameraSpec | None = None
    stride: int = Field(default=1, ge=1)
    teacher: Str | None = None  # a teacher name or a teacher.profiles entry (checked by Params)

    @classmethod
    def known_keys(cls) -> list[str]:
        return [*cls.model_fields, *SyntheticDefaults.model_fields]

    @property
    def overrides(self) -> dict[str, Any]:
        """The corpus.synthetic settings this clip overrides."""
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _fits_kind(self) -> Self:
        for k in self.overrides:
            if k not in SyntheticDefaults.model_fields:
                raise Problem(k, f"unknown key {{key}}; known keys: {', '.join(self.known_keys())}")
            if self.kind != "synthetic":
                raise Problem(k, f"{{key}} is a corpus.synthetic setting; a {self.kind} clip cannot take it")
        needs = _NEEDS.get(self.kind, ("source",))
        for k in needs:
            if getattr(self, k) is None:
                raise Problem(k, f"{{key}} is missing; a {self.kind} clip needs {', '.join(needs)}")
        for k, kinds in _ONLY_FOR.items():
            if getattr(self, k) is not None and self.kind not in kinds:
                raise Problem(
                    k, f"{{key}} is only for {' or '.join(kinds)} clips; remove it from this {self.kind} clip"
                )
        return self


class CorpusParams(Section):
    """Every clip the pipeline knows and the one split each belongs to."""

    synthetic: SyntheticDefaults
    clips: dict[Str, ClipSpec]
    train: Seq[Str]
    val: Seq[Str]
    test: Seq[Str]

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        for name, clip in self.clips.items():
            if not CLIP_NAME.match(name):
                raise bad(f"clips.{name}", name, "a name of letters, digits, _ and - starting with a letter or digit")
            if clip.kind == "synthetic":
                self._synthetic(name)
        seen: dict[str, str] = {}
        for split in SPLITS:
            if not getattr(self, split):
                raise Problem(split, "{key} is empty; list at least one clip of corpus.clips")
            for i, name in enumerate(getattr(self, split)):
                _check_member(f"{split}[{i}]", name, self.clips, seen)
                seen[name] = f"{split}[{i}]"
        for name in [n for n in self.clips if n not in seen]:
            raise Problem(f"clips.{name}", "{key} is in no split; add it to corpus.train, val or test, or remove it")
        return self

    def _synthetic(self, name: str) -> SyntheticDefaults:
        try:
            return SyntheticDefaults.model_validate({**dict(self.synthetic), **self.clips[name].overrides})
        except ValidationError as e:
            p = problem(e.errors()[0], SyntheticDefaults)
            raise Problem(join(f"clips.{name}", p.key), p.text) from None

    def clip(self, name: str) -> ClipSpec:
        """The spec of clip ``name``; ConfigError if there is none."""
        if name not in self.clips:
            raise ConfigError(f"params.yaml: corpus.clips has no clip {name!r}; known clips: {', '.join(self.clips)}")
        return self.clips[name]

    def synthetic_spec(self, name: str) -> SyntheticDefaults:
        """corpus.synthetic with the synthetic clip ``name``'s overrides applied."""
        if self.clip(name).kind != "synthetic":
            raise ConfigError(f"params.yaml: corpus.clips.{name} is a {self.clips[name].kind} clip, not synthetic")
        try:
            return self._synthetic(name)
        except Problem as p:
            raise ConfigError("params.yaml: " + p.text.replace("{key}", join("corpus", p.key))) from None

    def split_of(self, name: str) -> str:
        """``train``, ``val`` or ``test``."""
        self.clip(name)
        return next(s for s in SPLITS if name in getattr(self, s))

    def names(self, split: str) -> list[str]:
        """The clip names of a split, in params.yaml order."""
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        return list(getattr(self, split))


def _check_member(key: str, name: str, clips: dict[str, ClipSpec], seen: dict[str, str]) -> None:
    """A split entry (``key`` like ``test[1]``) must name a known clip that no earlier entry names."""
    if name not in clips:
        raise bad(key, name, f"a clip of corpus.clips ({', '.join(clips)})")
    if name in seen:
        other = seen[name]
        splits = {key.split("[")[0], other.split("[")[0]}
        if len(splits) == 1:
            raise Problem(key, f"{{key}}: {name} is listed twice (also at corpus.{other}); remove one")
        raise Problem(
            key, f"{{key}}: {name} is also in corpus.{other}; keep a clip in one split (never train on val or test)"
        )
