"""The building blocks of the params models (:mod:`refiner.core.config`): :class:`ConfigError`, the number and
sequence types with their bounds, and :class:`Section`, the frozen, strict base of every section.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Self, TypeVar

from annotated_types import Ge, Gt, Le, MultipleOf
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from refiner.core.config_messages import bad, message, place, yaml_number


class ConfigError(ValueError):
    """A value in params.yaml is missing, unknown or out of range."""


def int_only(v: Any) -> Any:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError("not an integer")
    return v


def _ordered(v: tuple[float, float]) -> tuple[float, float]:
    if v[0] > v[1]:
        raise ValueError("low > high")
    return v


def _as_tuple(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


T = TypeVar("T")


Num = Annotated[float, BeforeValidator(yaml_number)]


NonNeg = Annotated[Num, Ge(0)]


Pos = Annotated[Num, Gt(0)]


Frac = Annotated[Num, Ge(0), Le(1)]


Str = Annotated[str, Field(min_length=1)]


Pair = Annotated[tuple[T, T], BeforeValidator(_as_tuple), AfterValidator(_ordered)]


Seq = Annotated[tuple[T, ...], BeforeValidator(_as_tuple)]


Size = Annotated[int, Ge(16), Le(4096), MultipleOf(2)]


class Section(BaseModel):
    """Frozen, strict, no unknown keys; building one directly raises ConfigError as params.yaml does."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", allow_inf_nan=False)
    root: ClassVar[Any] = None  # the model of the whole file, :class:`refiner.core.config.Params` (it sets this)
    ordered: ClassVar[tuple[tuple[str, str, str], ...]] = ()  # (key, "<" or ">", other key) the key must satisfy

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise ConfigError(message(e, type(self), place(type(self), Section.root))) from None

    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]  # nested validation skips it

    @model_validator(mode="after")
    def _ordered_keys(self) -> Self:
        """Every :attr:`ordered` relation between two keys of the section holds (the first key is blamed)."""
        for key, op, other in self.ordered:
            a, b = getattr(self, key), getattr(self, other)
            if not (a < b if op == "<" else a > b):
                where = place(type(self), Section.root) if Section.root else type(self).__name__
                raise bad(key, a, f"number {op} {where}.{other}={b}")
        return self

    @classmethod
    def known_keys(cls) -> list[str]:
        return list(cls.model_fields)

    def replace(self, **changes: Any) -> Self:
        """A validated copy with ``changes`` applied (the frozen counterpart of dataclasses.replace)."""
        return type(self)(**{**dict(self), **changes})

    @classmethod
    def from_file(cls, path: str | Path = "params.yaml", **changes: Any) -> Self:
        """This section as ``path`` states it, with ``changes`` applied, e.g. ``ModelParams.from_file(channels=8)``."""
        section: Any = Section.root.load(path)
        for part in filter(None, place(cls, Section.root).split(".")):
            if part == "<name>":
                raise ConfigError(f"{cls.__name__} is per clip; read it from load_params(...).corpus.clips")
            section = getattr(section, part)
        return section.replace(**changes)
