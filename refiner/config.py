"""Typed view of ``params.yaml``: one frozen pydantic model per section, validated on load.

Defaults live in ``params.yaml`` only. Every key of every section is required there (a missing key is a
:class:`ConfigError` naming it); the models state types and bounds, never values. The only optional keys
are per clip in ``corpus.clips.<name>``: ``stride`` (1), ``teacher`` (``teacher.name``) and overrides of
``corpus.synthetic``. Derive variants: ``load_params().merged({"train": {"steps": 4}})``,
``params.model.replace(channels=8)``, ``ModelParams.from_file(channels=8)``; ``model_dump()`` replaces ``asdict``.

Every problem is one ConfigError line naming the file, the full key, the bad value and what is allowed:
``params.yaml: train.lr = 'abc' is invalid; allowed: number in (0, 1)``. Numbers may be written as strings
(YAML 1.1 reads ``1e-3`` as text); integers and booleans must be exactly that. Choice lists come from
one place, :mod:`refiner.choices`.
"""

from __future__ import annotations

import re
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar, Union, get_args, get_origin

import yaml
from annotated_types import Ge, Gt, Le, Lt, MultipleOf
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo

from refiner.choices import CAMERA_PATHS, CLIP_KINDS, SOURCE_KINDS, TEACHER_NAMES

SPLITS = ("train", "val", "test")
CLIP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


class ConfigError(ValueError):
    """A value in params.yaml is missing, unknown or out of range."""


class _Problem(ValueError):
    """A problem at ``key`` (relative to the model raising it); ``text`` has ``{key}`` where the full key goes."""

    def __init__(self, key: str, text: str) -> None:
        super().__init__(text.replace("{key}", key))
        self.key, self.text = key, text


def _show(value: Any) -> str:
    text = repr(list(value) if isinstance(value, tuple) else value)
    return text if len(text) <= 80 else text[:77] + "..."


def _bad(key: str, value: Any, allowed: str) -> _Problem:
    return _Problem(key, f"{{key}} = {_show(value)} is invalid; allowed: {allowed}")


def _yaml_number(v: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` as a string: take numeric strings as numbers."""
    try:
        return float(v) if isinstance(v, str) else v
    except ValueError:
        return v


def _int_only(v: Any) -> Any:
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
Num = Annotated[float, BeforeValidator(_yaml_number)]
NonNeg = Annotated[Num, Ge(0)]
Pos = Annotated[Num, Gt(0)]
Frac = Annotated[Num, Ge(0), Le(1)]
Str = Annotated[str, Field(min_length=1)]
Pair = Annotated[tuple[T, T], BeforeValidator(_as_tuple), AfterValidator(_ordered)]
Seq = Annotated[tuple[T, ...], BeforeValidator(_as_tuple)]
Size = Annotated[int, Ge(16), Le(4096), MultipleOf(2)]
TeacherName = Literal[TEACHER_NAMES]  # type: ignore[valid-type]


class _Model(BaseModel):
    """Frozen, strict, no unknown keys; building one directly raises ConfigError as params.yaml does."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", allow_inf_nan=False)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise ConfigError(_message(e, type(self), _place(type(self)))) from None

    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]  # nested validation skips it

    @classmethod
    def known_keys(cls) -> list[str]:
        return list(cls.model_fields)

    def replace(self, **changes: Any) -> Self:
        """A validated copy with ``changes`` applied (the frozen counterpart of dataclasses.replace)."""
        return type(self)(**{**dict(self), **changes})

    @classmethod
    def from_file(cls, path: str | Path = "params.yaml", **changes: Any) -> Self:
        """This section as ``path`` states it, with ``changes`` applied, e.g. ``ModelParams.from_file(channels=8)``."""
        section: Any = load_params(path)
        for part in filter(None, _place(cls).split(".")):
            if part == "<name>":
                raise ConfigError(f"{cls.__name__} is per clip; read it from load_params(...).corpus.clips")
            section = getattr(section, part)
        return section.replace(**changes)

    def validate(self) -> Self:  # type: ignore[override]
        """Kept for old callers: a model is validated when it is built."""
        return self


class SyntheticDefaults(_Model):
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

    @model_validator(mode="after")
    def _static_within(self) -> Self:
        if self.static_frames > self.frames:
            raise _bad("static_frames", self.static_frames, f"integer in [0, frames={self.frames}]")
        return self


class CameraSpec(_Model):
    """Pinhole intrinsics in pixels of a data set's images."""

    fx: Pos
    fy: Pos
    cx: Pos
    cy: Pos


_NEEDS = {"synthetic": ("seed",), "video": ("source", "intrinsics")}  # other kinds: source
_ONLY_FOR = {"seed": ("synthetic",), "source": SOURCE_KINDS, "intrinsics": ("video",), "gt": ("video",)}
_ONLY_FOR["camera"] = tuple(k for k in SOURCE_KINDS if k != "video")


class ClipSpec(_Model):
    """One clip of ``corpus.clips``; keys beyond the fields are synthetic overrides (:attr:`overrides`)."""

    model_config = ConfigDict(extra="allow")
    kind: Literal[CLIP_KINDS]  # type: ignore[valid-type]
    seed: int | None = Field(default=None, ge=0)
    source: Str | None = None
    intrinsics: Str | None = None
    gt: Str | None = None
    camera: CameraSpec | None = None
    stride: int = Field(default=1, ge=1)
    teacher: TeacherName | None = None

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
                raise _Problem(k, f"unknown key {{key}}; known keys: {', '.join(self.known_keys())}")
            if self.kind != "synthetic":
                raise _Problem(k, f"{{key}} is a corpus.synthetic setting; a {self.kind} clip cannot take it")
        needs = _NEEDS.get(self.kind, ("source",))
        for k in needs:
            if getattr(self, k) is None:
                raise _Problem(k, f"{{key}} is missing; a {self.kind} clip needs {', '.join(needs)}")
        for k, kinds in _ONLY_FOR.items():
            if getattr(self, k) is not None and self.kind not in kinds:
                raise _Problem(
                    k, f"{{key}} is only for {' or '.join(kinds)} clips; remove it from this {self.kind} clip"
                )
        return self


class CorpusParams(_Model):
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
                raise _bad(f"clips.{name}", name, "a name of letters, digits, _ and - starting with a letter or digit")
            if clip.kind == "synthetic":
                self._synthetic(name)
        seen: dict[str, str] = {}
        for split in SPLITS:
            if not getattr(self, split):
                raise _Problem(split, "{key} is empty; list at least one clip of corpus.clips")
            for i, name in enumerate(getattr(self, split)):
                _check_member(f"{split}[{i}]", name, self.clips, seen)
                seen[name] = f"{split}[{i}]"
        for name in [n for n in self.clips if n not in seen]:
            raise _Problem(f"clips.{name}", "{key} is in no split; add it to corpus.train, val or test, or remove it")
        return self

    def _synthetic(self, name: str) -> SyntheticDefaults:
        try:
            return SyntheticDefaults.model_validate({**dict(self.synthetic), **self.clips[name].overrides})
        except ValidationError as e:
            p = _problem(e.errors()[0], SyntheticDefaults)
            raise _Problem(_join(f"clips.{name}", p.key), p.text) from None

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
        except _Problem as p:
            raise ConfigError("params.yaml: " + p.text.replace("{key}", _join("corpus", p.key))) from None

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
        raise _bad(key, name, f"a clip of corpus.clips ({', '.join(clips)})")
    if name in seen:
        other = seen[name]
        splits = {key.split("[")[0], other.split("[")[0]}
        if len(splits) == 1:
            raise _Problem(key, f"{{key}}: {name} is listed twice (also at corpus.{other}); remove one")
        raise _Problem(
            key, f"{{key}}: {name} is also in corpus.{other}; keep a clip in one split (never train on val or test)"
        )


class DecodeParams(_Model):
    """The canonical grid of every clip: short side ``size``; the whole frame with its aspect ratio (the long
    side a multiple of teacher.low_res_factor) or, with ``crop``, the size x size centre crop."""

    size: Size
    crop: bool


class WindowParams(_Model):
    """Temporal windows shared by training and inference."""

    length: int = Field(ge=2)
    overlap: int = Field(ge=0)
    keyframes: Seq[int]

    @model_validator(mode="after")
    def _inside(self) -> Self:
        if self.overlap >= self.length:
            raise _bad("overlap", self.overlap, f"integer in [0, windows.length={self.length})")
        k = self.keyframes
        if list(k) != sorted(set(k)) or not all(0 <= x < self.length for x in k):
            raise _bad("keyframes", k, f"sorted, distinct integers in [0, windows.length={self.length})")
        return self


class TeacherParams(_Model):
    """The frozen teacher; the simulated one draws each error parameter per clip from its [low, high] range."""

    name: TeacherName
    low_res_factor: Annotated[Literal[1, 2, 4, 8], BeforeValidator(_int_only)]
    seed: int = Field(ge=0)
    scale_std: Pair[NonNeg]
    scale_corr: Pair[Annotated[Num, Ge(0), Lt(1)]]
    jump_prob: Pair[Frac]
    jump_std: Pair[NonNeg]
    warp_amp: Pair[NonNeg]
    warp_drift: Pair[NonNeg]
    noise_rel: Pair[NonNeg]
    edge_blur_px: Pair[NonNeg]
    uncertainty_noise: Pair[NonNeg]
    calibration_bins: int = Field(ge=2)
    unidepth_weights: Str
    unidepth_resolution_level: int = Field(ge=0, le=9)


class LossParams(_Model):
    """Loss weights and thresholds (refiner/losses.py documents each term)."""

    lambda_teacher: NonNeg
    lambda_gt: NonNeg
    teacher_l1: NonNeg
    w_temp: NonNeg
    temp_tau: NonNeg
    temp_tau_depth: NonNeg
    temp_k: NonNeg
    lambda_res: NonNeg
    residual_mean_weight: NonNeg
    w_var: NonNeg
    var_conf_threshold: NonNeg
    var_sigma_target: NonNeg
    w_edge: NonNeg
    edge_sigma: Pos

    @model_validator(mode="after")
    def _gt_outranks_teacher(self) -> Self:
        if self.lambda_gt <= self.lambda_teacher:
            raise _bad("lambda_gt", self.lambda_gt, f"number > loss.lambda_teacher={self.lambda_teacher}")
        return self


class TrainParams(_Model):
    """The training loop: optimiser, schedule and augmentation."""

    seed: int = Field(ge=0)
    init: Str | None
    steps: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    lr: Num = Field(gt=0, lt=1)
    weight_decay: NonNeg
    warmup_steps: int = Field(ge=0)
    grad_clip: NonNeg | None = Field(description="number >= 0 (0 or null = no clipping)")
    ema_decay: Frac
    amp: Literal["none", "bf16", "fp16"]
    crop: int = Field(ge=8)
    eval_every: int = Field(ge=1)
    reverse_prob: Frac
    jitter_prob: Frac
    jitter_scale: Num = Field(ge=0, lt=0.5)
    jitter_noise_rel: NonNeg
    gt_fraction: Frac
    guard_absrel: NonNeg
    num_workers: int = Field(ge=0)


class InferParams(_Model):
    """Windowed inference, blending, drift control and exports."""

    confidence_ema: Frac
    keyframe_tau: NonNeg
    keyframe_boost: NonNeg
    occlusion_gating: bool
    hard_clamp: bool
    min_depth_m: Pos
    max_depth_m: Pos
    reanchor_every: int = Field(ge=0)
    drift_warn_rel: NonNeg
    drift_patch: Frac
    export_npy: bool
    export_png16: bool

    @model_validator(mode="after")
    def _depth_range(self) -> Self:
        if self.min_depth_m >= self.max_depth_m:
            raise _bad("min_depth_m", self.min_depth_m, f"number in (0, infer.max_depth_m={self.max_depth_m})")
        return self


class ModelParams(_Model):
    """The refiner architecture (refiner/model/refiner.py) and its residual clamp."""

    channels: int = Field(ge=2)
    ssm_hidden: int = Field(ge=1)
    d_state: int = Field(ge=1)
    d_conv: int = Field(ge=1)
    expand: int = Field(ge=1)
    bidirectional: bool
    carry_state: bool
    use_conf_grad: bool
    use_time_encoding: bool
    use_rgb_edges: bool
    depth_aware_mixing: bool
    highres_refine: bool
    midres_branch: bool
    guided_upsampling: bool
    temporal_blend: bool
    clamp_alpha: NonNeg
    clamp_beta: NonNeg
    clamp_gamma: NonNeg
    use_mamba_ssm: Literal["auto", "never"]

    @model_validator(mode="after")
    def _clamp_opens(self) -> Self:
        if self.clamp_alpha == 0 and self.clamp_beta == 0:
            raise _bad("clamp_alpha", self.clamp_alpha, "number > 0 when model.clamp_beta is 0")
        return self


class EvaluateParams(_Model):
    """Scoring against GT and the baseline filters (refiner/metrics.py, refiner/baselines.py)."""

    ema_alpha: Num = Field(gt=0, le=1)
    bilateral_radius: int = Field(ge=0)
    sigma_depth_rel: Pos
    sigma_colour: Pos
    opw_weight: NonNeg
    baseline_m: Pos
    tae_max_depth_m: Pos
    lpips_weights: str | None


class StereoParams(_Model):
    """Left-to-right rendering for VR and its checks (refiner/stereo.py)."""

    baseline_m: Pos
    pop_threshold_px: Pos
    max_video_frames: int | None = Field(ge=1)


class Params(_Model):
    """All of params.yaml."""

    corpus: CorpusParams
    decode: DecodeParams
    windows: WindowParams
    teacher: TeacherParams
    loss: LossParams
    train: TrainParams
    infer: InferParams
    model: ModelParams
    evaluate: EvaluateParams
    stereo: StereoParams

    @model_validator(mode="after")
    def _across_sections(self) -> Self:
        f, size, crop = self.teacher.low_res_factor, self.decode.size, self.train.crop
        if size % f:
            raise _bad("decode.size", size, f"even integer in [16, 4096], a multiple of teacher.low_res_factor={f}")
        if crop > size or crop % f:
            raise _bad(
                "train.crop", crop, f"integer in [8, decode.size={size}], a multiple of teacher.low_res_factor={f}"
            )
        for name, clip in self.corpus.clips.items():
            if clip.kind == "video" and clip.gt is None and self.teacher_of(name) == "simulated":
                raise _Problem(
                    f"corpus.clips.{name}",
                    "{key}: the simulated teacher needs ground truth but this video has gt: null; "
                    "set teacher: unidepth for this clip, or give its gt",
                )
        return self

    def teacher_of(self, clip: str) -> str:
        """The teacher that runs on ``clip``: its own ``teacher`` or else ``teacher.name``."""
        return self.corpus.clip(clip).teacher or self.teacher.name

    def merged(self, overrides: dict[str, Any]) -> Params:
        """A validated copy with ``overrides`` (nested like params.yaml) applied, as ``dvc exp run -S`` does."""
        return params_from_dict(_deep_merge(self.model_dump(), overrides))


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# --- one line naming the key for every pydantic error ---


def _join(a: str, b: str) -> str:
    return a + b if not a or not b or b.startswith("[") else f"{a}.{b}"


def _key(loc: tuple[Any, ...]) -> str:
    key = ""
    for part in loc:
        key = _join(key, f"[{part}]" if isinstance(part, int) else str(part))
    return key


def _strip(tp: Any) -> Any:
    """The type inside Annotated[...] and X | None."""
    while get_origin(tp) is Annotated or (get_origin(tp) in (Union, types.UnionType) and type(None) in get_args(tp)):
        tp = next(a for a in get_args(tp) if a is not type(None))
    return tp


def _walk(cls: type[BaseModel], loc: tuple[Any, ...]) -> tuple[type[BaseModel], FieldInfo | None, Any]:
    """Along ``loc``: the last model passed, its field named there (if any) and the type at ``loc``."""
    parent, info, tp = cls, None, cls
    for part in loc:
        tp = _strip(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            parent, info = tp, tp.model_fields.get(str(part))
            tp = info.annotation if info else None
        else:
            args = [a for a in get_args(tp) if a is not Ellipsis]
            tp = args[-1] if args else None
    return parent, info, _strip(tp)


def _place(cls: type[BaseModel], root: type[BaseModel] | None = None, at: str = "") -> str:
    """Where a section model sits in params.yaml, e.g. ``corpus.synthetic`` ('' for Params)."""
    for name, info in (root or Params).model_fields.items():
        tp, key = _strip(info.annotation), _join(at, name)
        if get_origin(tp) is dict:
            tp, key = get_args(tp)[1], key + ".<name>"
        if tp is cls or (isinstance(tp, type) and issubclass(tp, _Model) and (key := _place(cls, tp, key))):
            return key
    return ""


def _bounds(md: list[Any]) -> str:
    b = {k: getattr(m, k) for m in md for k in ("gt", "ge", "lt", "le") if hasattr(m, k)}  # Gt(0) -> {"gt": 0}
    lo = ("(", b["gt"]) if "gt" in b else ("[", b["ge"]) if "ge" in b else None
    hi = (b["lt"], ")") if "lt" in b else (b["le"], "]") if "le" in b else None
    if lo and hi:
        return f" in {lo[0]}{lo[1]}, {hi[0]}{hi[1]}"
    if lo:
        return f" {'>' if lo[0] == '(' else '>='} {lo[1]}"
    return f" {'<' if hi[1] == ')' else '<='} {hi[0]}" if hi else ""


def _describe(tp: Any, md: list[Any]) -> str:
    """Allowed values of a type and its constraints, e.g. 'integer in [0, 9]'."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        return _describe(args[0], [*args[1:], *md])
    if origin in (Union, types.UnionType) and type(None) in args:
        return "null or " + _describe(next(a for a in args if a is not type(None)), md)
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin is dict:
        return f"a mapping of names to {_describe(args[1], [])}"
    if origin is tuple:
        each = _describe(args[0], [])
        return f"a list of {each}" if args[-1] is Ellipsis else f"[low, high] with low <= high, each {each}"
    if isinstance(tp, type) and issubclass(tp, _Model):
        return "a mapping with keys " + ", ".join(tp.known_keys())
    base = {bool: "true or false", int: "integer", float: "number", str: "non-empty text"}.get(tp, str(tp))
    even = any(isinstance(m, MultipleOf) and m.multiple_of == 2 for m in md)
    return ("even " if even else "") + base + _bounds(md)


def _hint(value: Any, allowed: str) -> str:
    if isinstance(value, bool) and ("number" in allowed or "integer" in allowed):
        return " (true/false is not a number)"
    if isinstance(value, str) and "integer" in allowed and _yaml_number(value) is not value:
        return " (write a plain integer, e.g. 1000 rather than 1e3)"
    return ""


def _problem(err: Any, cls: type[BaseModel]) -> _Problem:
    """One pydantic error as a problem relative to ``cls``."""
    loc, kind, value = tuple(err["loc"]), err["type"], err.get("input")
    cause = err.get("ctx", {}).get("error")
    if isinstance(cause, _Problem):
        return _Problem(_join(_key(loc), cause.key), cause.text)
    if loc[-1:] == ("[key]",):
        return _Problem(_key(loc[:-2]), f"{{key}}: name {value!r} is not text; quote it ('{value}')")
    parent, info, tp = _walk(cls, loc)
    if kind == "extra_forbidden":
        what = "section" if parent is Params else "key"
        return _Problem(_key(loc), f"unknown {what} {{key}}; known {what}s: {', '.join(parent.known_keys())}")
    allowed = (info.description or _describe(info.annotation, info.metadata)) if info else _describe(tp, [])
    if kind == "missing":
        return _Problem(_key(loc), f"{{key}} is missing; add it ({allowed})")
    if kind in ("model_type", "dict_type"):
        allowed = _describe(tp, [])
    return _Problem(_key(loc), f"{{key}} = {_show(value)} is invalid; allowed: {allowed}{_hint(value, allowed)}")


def _message(e: ValidationError, cls: type[BaseModel], prefix: str, source: str = "params.yaml") -> str:
    errors = e.errors()
    p = _problem(errors[0], cls)
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"{source}: {p.text.replace('{key}', _join(prefix, p.key))}{more}"


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
        raise ConfigError(_message(e, Params, "", source)) from None


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
