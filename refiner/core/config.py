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

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self, TypeVar

import yaml
from annotated_types import Ge, Gt, Le, Lt, MultipleOf
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from refiner.core.choices import CAMERA_PATHS, CLIP_KINDS, SOURCE_KINDS
from refiner.core.config_messages import Problem, bad, join, message, place, problem, yaml_number
from refiner.core.plugins import is_teacher_name, registered, teacher_choices

SPLITS = ("train", "val", "test")
CLIP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


class ConfigError(ValueError):
    """A value in params.yaml is missing, unknown or out of range."""


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
Num = Annotated[float, BeforeValidator(yaml_number)]
NonNeg = Annotated[Num, Ge(0)]
Pos = Annotated[Num, Gt(0)]
Frac = Annotated[Num, Ge(0), Le(1)]
Str = Annotated[str, Field(min_length=1)]
Pair = Annotated[tuple[T, T], BeforeValidator(_as_tuple), AfterValidator(_ordered)]
Seq = Annotated[tuple[T, ...], BeforeValidator(_as_tuple)]
Size = Annotated[int, Ge(16), Le(4096), MultipleOf(2)]


class _Model(BaseModel):
    """Frozen, strict, no unknown keys; building one directly raises ConfigError as params.yaml does."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", allow_inf_nan=False)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise ConfigError(message(e, type(self), place(type(self), Params))) from None

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
        for part in filter(None, place(cls, Params).split(".")):
            if part == "<name>":
                raise ConfigError(f"{cls.__name__} is per clip; read it from load_params(...).corpus.clips")
            section = getattr(section, part)
        return section.replace(**changes)


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
    sensor_noise: NonNeg
    exposure_jitter: NonNeg

    @model_validator(mode="after")
    def _static_within(self) -> Self:
        if self.static_frames > self.frames:
            raise bad("static_frames", self.static_frames, f"integer in [0, frames={self.frames}]")
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
            raise bad("overlap", self.overlap, f"integer in [0, windows.length={self.length})")
        k = self.keyframes
        if list(k) != sorted(set(k)) or not all(0 <= x < self.length for x in k):
            raise bad("keyframes", k, f"sorted, distinct integers in [0, windows.length={self.length})")
        return self


class TeacherParams(_Model):
    """The frozen teacher (a plug-in, :mod:`refiner.teachers.registry`); the simulated one draws each error
    parameter per clip from its [low, high] range. ``profiles`` are named variants of this section that a clip's
    ``teacher:`` may name (e.g. the simulated teacher with other ranges): :meth:`resolve`."""

    name: Str
    device: Str
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
    calibration_fallback: Literal["self", "rank"]
    unidepth_weights: Str
    unidepth_resolution_level: int = Field(ge=0, le=9)
    options: dict[Str, dict[str, Any]]
    profiles: dict[Str, dict[str, Any]]

    @model_validator(mode="after")
    def _known_teachers(self) -> Self:
        if not (is_teacher_name(self.name) or self.name in self.profiles):
            raise bad("name", self.name, f"{teacher_choices()}, or a teacher.profiles entry")
        for profile, changes in self.profiles.items():
            key = f"profiles.{profile}"
            if is_teacher_name(profile) and profile in registered():
                raise Problem(key, "{key}: a profile cannot take the name of a registered teacher; rename it")
            if "name" not in changes or changes["name"] in self.profiles:
                raise Problem(key, "{key} needs name: the registered teacher it runs (not another profile)")
            unknown = [k for k in changes if k not in type(self).model_fields or k in ("profiles", "options")]
            if unknown:
                raise Problem(f"{key}.{unknown[0]}", "{key}: not a teacher setting a profile can change")
            try:
                TeacherParams.model_validate({**dict(self), **changes, "profiles": {}})
            except ValidationError as e:
                p = problem(e.errors()[0], TeacherParams)
                raise Problem(join(key, p.key), p.text) from None
        return self

    def resolve(self, choice: str) -> TeacherParams:
        """The settings of the teacher ``choice`` names: this section, or a profile's changes applied to it."""
        if choice not in self.profiles:
            return self.replace(name=choice, profiles={})
        return TeacherParams(**{**dict(self), **self.profiles[choice], "profiles": {}})


class LossParams(_Model):
    """Loss weights and thresholds (refiner/training/losses.py documents each term)."""

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
            raise bad("lambda_gt", self.lambda_gt, f"number > loss.lambda_teacher={self.lambda_teacher}")
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
    resim_profile: Str | None
    resim_prob: Frac
    resim_gt_fraction: Frac
    conf_gamma: Pair[Pos]
    guard_absrel: NonNeg
    num_workers: int = Field(ge=0)
    frame_cache_mb: int = Field(ge=0)


class AdaptParams(_Model):
    """GT-free adaptation (refiner/inference/adapt.py) on ``clips`` (their teacher outputs only; GT is never read)."""

    clips: Seq[Str]
    steps: int = Field(ge=0)
    lr: Num = Field(gt=0, lt=1)
    batch_size: int = Field(ge=1)
    crop: int = Field(ge=8)
    seed: int = Field(ge=0)
    anchor_still: bool


class InferParams(_Model):
    """Windowed inference, blending, drift control and exports."""

    confidence_ema: Frac
    keyframe_tau: NonNeg
    keyframe_boost: NonNeg
    occlusion_gating: bool
    hard_clamp: bool
    noise_ceiling: NonNeg
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
            raise bad("min_depth_m", self.min_depth_m, f"number in (0, infer.max_depth_m={self.max_depth_m})")
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
    clamp_noise: NonNeg
    noise_features: bool
    use_mamba_ssm: Literal["auto", "never"]

    @model_validator(mode="after")
    def _clamp_opens(self) -> Self:
        if self.clamp_alpha == 0 and self.clamp_beta == 0:
            raise bad("clamp_alpha", self.clamp_alpha, "number > 0 when model.clamp_beta is 0")
        return self


class EvaluateParams(_Model):
    """Scoring against GT and the baseline filters (refiner/evaluation/metrics.py, refiner/evaluation/baselines.py)."""

    ema_alpha: Num = Field(gt=0, le=1)
    bilateral_radius: int = Field(ge=0)
    sigma_depth_rel: Pos
    sigma_colour: Pos
    opw_weight: NonNeg
    baseline_m: Pos
    tae_max_depth_m: Pos
    lpips_weights: str | None


class StereoParams(_Model):
    """Left-to-right rendering for VR and its checks (refiner/geometry/warp.py)."""

    baseline_m: Pos
    pop_threshold_px: Pos
    max_video_frames: int | None = Field(ge=1)


class PrepareParams(_Model):
    """Clip preparation on Ray (:mod:`refiner.data.prepare`): how many DVC stages share the corpus, and where it runs.
    Only ``shards`` changes what is written; the other keys say where and how (no stage re-runs for them)."""

    shards: Seq[int] = Field(min_length=1, description="the integers 0, 1, ..., N-1 in order")
    ray_address: Str | None  # null: $RAY_ADDRESS, else a local Ray started by the stage
    local_cpus: int = Field(ge=1)
    max_retries: int = Field(ge=0)

    @model_validator(mode="after")
    def _numbered(self) -> Self:
        if list(self.shards) != list(range(len(self.shards))):
            raise bad("shards", list(self.shards), "the integers 0, 1, ..., N-1 in order (one stage prepare@<i> each)")
        return self


class Params(_Model):
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
