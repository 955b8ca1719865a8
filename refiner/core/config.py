"""Typed view of ``params.yaml``: one frozen pydantic model per section, validated on load.

Defaults live in ``params.yaml`` only. Every key of every section is required there (a missing key is a
:class:`ConfigError` naming it); the models state types and bounds, never values. The only optional keys
are per clip in ``corpus.clips.<name>``: ``stride`` (1), ``teacher`` (``teacher.name``) and overrides of
``corpus.synthetic``. Derive variants: ``load_params().merged({"train": {"steps": 4}})``,
``params.model.replace(channels=8)``, ``ModelParams.from_file(channels=8)``; ``model_dump()`` replaces ``asdict``.

Every problem is one ConfigError line naming the file, the full key, the bad value and what is allowed:
``params.yaml: train.lr = 'abc' is invalid; allowed: number in (0, 1)``. Numbers may be written as strings
(YAML 1.1 reads ``1e-3`` as text); integers and booleans must be exactly that. Choice lists come from
one place, :mod:`refiner.core.choices`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Self

import yaml
from pydantic import ValidationError, model_validator

from refiner.core.config_messages import bad, message
from refiner.core.params_base import ConfigError, Section
from refiner.core.params_corpus import CorpusParams
from refiner.core.params_stages import (
    AdaptParams,
    DecodeParams,
    EvaluateParams,
    InferParams,
    LossParams,
    ModelParams,
    PrepareParams,
    StereoParams,
    TeacherParams,
    TestParams,
    TrainParams,
    WindowParams,
)
from refiner.core.plugins import is_teacher_name, teacher_choices


class Params(Section):
    """All of params.yaml."""

    key_word: ClassVar[str] = "section"  # what an unknown top-level key is called in messages

    corpus: CorpusParams
    decode: DecodeParams
    prepare: PrepareParams
    windows: WindowParams
    teacher: TeacherParams
    loss: LossParams
    train: TrainParams
    adapt: AdaptParams
    infer: InferParams
    model: ModelParams
    evaluate: EvaluateParams
    stereo: StereoParams
    test: TestParams

    @model_validator(mode="after")
    def _across_sections(self) -> Self:
        f, size, crop = self.teacher.low_res_factor, self.decode.size, self.train.crop
        if size % f:
            raise bad("decode.size", size, f"even integer in [16, 4096], a multiple of teacher.low_res_factor={f}")
        if crop > size or crop % f:
            raise bad(
                "train.crop", crop, f"integer in [8, decode.size={size}], a multiple of teacher.low_res_factor={f}"
            )
        for i, name in enumerate(self.adapt.clips):
            if name not in self.corpus.clips:
                raise bad(f"adapt.clips[{i}]", name, f"a clip of corpus.clips ({', '.join(self.corpus.clips)})")
        if self.adapt.crop % f:
            raise bad("adapt.crop", self.adapt.crop, f"integer >= 8, a multiple of teacher.low_res_factor={f}")
        resim = self.train.resim_profile
        if resim is not None and self.teacher.profiles.get(resim, {}).get("name") != "simulated":
            raise bad("train.resim_profile", resim, "null or a teacher.profiles entry that runs the simulated teacher")
        for name, clip in self.corpus.clips.items():
            if clip.teacher is not None and not (
                is_teacher_name(clip.teacher) or clip.teacher in self.teacher.profiles
            ):
                raise bad(
                    f"corpus.clips.{name}.teacher", clip.teacher, f"{teacher_choices()}, or a teacher.profiles entry"
                )
        return self

    def teacher_of(self, clip: str) -> str:
        """The teacher that runs on ``clip`` as the corpus names it: its own ``teacher`` or else ``teacher.name``
        (a registered teacher or a profile; :meth:`TeacherParams.resolve` gives its settings)."""
        return self.corpus.clip(clip).teacher or self.teacher.name

    @classmethod
    def load(cls, path: str | Path = "params.yaml") -> Params:
        """:func:`load_params` (what :meth:`Section.from_file` reads its section from)."""
        return load_params(path)

    def merged(self, overrides: dict[str, Any]) -> Params:
        """A validated copy with ``overrides`` (nested like params.yaml) applied, as ``dvc exp run -S`` does."""
        return params_from_dict(_deep_merge(self.model_dump(), overrides))


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# --- reading the file ---


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key repeated in one mapping (plain YAML silently keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
            if isinstance(key, (str, int, float)) and key != "<<":
                if key in seen:
                    raise ConfigError(
                        f"{self.name}: line {line}: duplicate key {key!r} (first at line {seen[key]}); "
                        "YAML would silently keep only the last one: rename or remove one of them"
                    )
                seen[key] = line
        return super().construct_mapping(node, deep)


def params_from_dict(raw: dict[str, Any], source: str = "params.yaml") -> Params:
    """Build and validate :class:`Params` from a parsed params.yaml mapping."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must be a mapping of sections ({', '.join(Params.model_fields)})")
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(message(e, Params, "", source)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; raises ConfigError with the key at fault."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} not found; run from the repository root or pass the path to params.yaml")
    try:
        with path.open() as f:
            raw = yaml.load(f, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    return params_from_dict(raw or {}, str(path))


Section.root = Params
