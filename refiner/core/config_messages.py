"""How a params.yaml problem becomes one line naming the key, the bad value and what is allowed.

:class:`Problem` is raised by validators with the key relative to the model raising it; :func:`message` turns a
pydantic ValidationError into ``params.yaml: train.lr = 'abc' is invalid; allowed: number in (0, 1)``, reading
the allowed values off the field's type and constraints (:func:`describe`). :func:`yaml_number` (numeric text
read as a number) lives here because both the validators and the hints for integers need it.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from annotated_types import MultipleOf
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo


def yaml_number(v: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` as a string: a numeric string as its float, anything else as it is."""
    try:
        return float(v) if isinstance(v, str) else v
    except ValueError:
        return v


class Problem(ValueError):
    """A problem at ``key`` (relative to the model raising it); ``text`` has ``{key}`` where the full key goes."""

    def __init__(self, key: str, text: str) -> None:
        super().__init__(text.replace("{key}", key))
        self.key, self.text = key, text


def show(value: Any) -> str:
    text = repr(list(value) if isinstance(value, tuple) else value)
    return text if len(text) <= 80 else text[:77] + "..."


def bad(key: str, value: Any, allowed: str) -> Problem:
    return Problem(key, f"{{key}} = {show(value)} is invalid; allowed: {allowed}")


def join(a: str, b: str) -> str:
    return a + b if not a or not b or b.startswith("[") else f"{a}.{b}"


def key_of(loc: tuple[Any, ...]) -> str:
    key = ""
    for part in loc:
        key = join(key, f"[{part}]" if isinstance(part, int) else str(part))
    return key


def strip(tp: Any) -> Any:
    """The type inside Annotated[...] and X | None."""
    while get_origin(tp) is Annotated or (get_origin(tp) in (Union, types.UnionType) and type(None) in get_args(tp)):
        tp = next(a for a in get_args(tp) if a is not type(None))
    return tp


def walk(cls: type[BaseModel], loc: tuple[Any, ...]) -> tuple[type[BaseModel], FieldInfo | None, Any]:
    """Along ``loc``: the last model passed, its field named there (if any) and the type at ``loc``."""
    parent, info, tp = cls, None, cls
    for part in loc:
        tp = strip(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            parent, info = tp, tp.model_fields.get(str(part))
            tp = info.annotation if info else None
        else:
            args = [a for a in get_args(tp) if a is not Ellipsis]
            tp = args[-1] if args else None
    return parent, info, strip(tp)


def place(cls: type[BaseModel], root: type[BaseModel], at: str = "") -> str:
    """Where a section model sits in params.yaml, e.g. ``corpus.synthetic`` ('' for Params)."""
    for name, info in root.model_fields.items():
        tp, key = strip(info.annotation), join(at, name)
        if get_origin(tp) is dict:
            tp, key = get_args(tp)[1], key + ".<name>"
        if tp is cls or (
            isinstance(tp, type)
            and issubclass(tp, BaseModel)
            and hasattr(tp, "known_keys")
            and (key := place(cls, tp, key))
        ):
            return key
    return ""


def bounds(md: list[Any]) -> str:
    b = {k: getattr(m, k) for m in md for k in ("gt", "ge", "lt", "le") if hasattr(m, k)}  # Gt(0) -> {"gt": 0}
    lo = ("(", b["gt"]) if "gt" in b else ("[", b["ge"]) if "ge" in b else None
    hi = (b["lt"], ")") if "lt" in b else (b["le"], "]") if "le" in b else None
    if lo and hi:
        return f" in {lo[0]}{lo[1]}, {hi[0]}{hi[1]}"
    if lo:
        return f" {'>' if lo[0] == '(' else '>='} {lo[1]}"
    return f" {'<' if hi[1] == ')' else '<='} {hi[0]}" if hi else ""


def describe(tp: Any, md: list[Any]) -> str:
    """Allowed values of a type and its constraints, e.g. 'integer in [0, 9]'."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        return describe(args[0], [*args[1:], *md])
    if origin in (Union, types.UnionType) and type(None) in args:
        return "null or " + describe(next(a for a in args if a is not type(None)), md)
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin is dict:
        return f"a mapping of names to {describe(args[1], [])}"
    if origin is tuple:
        each = describe(args[0], [])
        return f"a list of {each}" if args[-1] is Ellipsis else f"[low, high] with low <= high, each {each}"
    if isinstance(tp, type) and issubclass(tp, BaseModel) and hasattr(tp, "known_keys"):
        return "a mapping with keys " + ", ".join(tp.known_keys())
    base = {bool: "true or false", int: "integer", float: "number", str: "non-empty text"}.get(tp, str(tp))
    even = any(isinstance(m, MultipleOf) and m.multiple_of == 2 for m in md)
    return ("even " if even else "") + base + bounds(md)


def hint(value: Any, allowed: str) -> str:
    if isinstance(value, bool) and ("number" in allowed or "integer" in allowed):
        return " (true/false is not a number)"
    if isinstance(value, str) and "integer" in allowed and yaml_number(value) is not value:
        return " (write a plain integer, e.g. 1000 rather than 1e3)"
    return ""


def problem(err: Any, cls: type[BaseModel]) -> Problem:
    """One pydantic error as a problem relative to ``cls`` (a model's ``key_word`` names its keys, default 'key')."""
    loc, kind, value = tuple(err["loc"]), err["type"], err.get("input")
    cause = err.get("ctx", {}).get("error")
    if isinstance(cause, Problem):
        return Problem(join(key_of(loc), cause.key), cause.text)
    if loc[-1:] == ("[key]",):
        return Problem(key_of(loc[:-2]), f"{{key}}: name {value!r} is not text; quote it ('{value}')")
    parent, info, tp = walk(cls, loc)
    if kind == "extra_forbidden":
        what = getattr(parent, "key_word", "key")
        return Problem(key_of(loc), f"unknown {what} {{key}}; known {what}s: {', '.join(parent.known_keys())}")
    allowed = (info.description or describe(info.annotation, info.metadata)) if info else describe(tp, [])
    if kind == "missing":
        return Problem(key_of(loc), f"{{key}} is missing; add it ({allowed})")
    if kind in ("model_type", "dict_type"):
        allowed = describe(tp, [])
    return Problem(key_of(loc), f"{{key}} = {show(value)} is invalid; allowed: {allowed}{hint(value, allowed)}")


def message(e: ValidationError, cls: type[BaseModel], prefix: str, source: str = "params.yaml") -> str:
    errors = e.errors()
    p = problem(errors[0], cls)
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"{source}: {p.text.replace('{key}', join(prefix, p.key))}{more}"
