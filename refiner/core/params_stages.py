"""The per-stage sections of params.yaml (decode, windows, teacher, loss, train, adapt, infer, model, evaluate,
stereo, prepare), one frozen model each.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from annotated_types import Ge, Lt
from pydantic import BeforeValidator, Field, ValidationError, model_validator

from refiner.core.config_messages import Problem, bad, join, problem
from refiner.core.params_base import Frac, NonNeg, Num, Pair, Pos, Section, Seq, Size, Str, int_only
from refiner.core.plugins import is_teacher_name, registered, teacher_choices


class DecodeParams(Section):
    """The canonical grid of every clip: short side ``size``; the whole frame with its aspect ratio (the long
    side a multiple of teacher.low_res_factor) or, with ``crop``, the size x size centre crop."""

    size: Size
    crop: bool


class WindowParams(Section):
    """Temporal windows: training's (``length``, ``overlap``, ``keyframes``) and the longer ones inference slides."""

    length: int = Field(ge=2)
    overlap: int = Field(ge=0)
    keyframes: Seq[int]
    inference_length: int = Field(ge=2)
    inference_overlap: int = Field(ge=0)

    @model_validator(mode="after")
    def _inside(self) -> Self:
        if self.overlap >= self.length:
            raise bad("overlap", self.overlap, f"integer in [0, windows.length={self.length})")
        if self.inference_overlap >= self.inference_length:
            allowed = f"integer in [0, windows.inference_length={self.inference_length})"
            raise bad("inference_overlap", self.inference_overlap, allowed)
        k = self.keyframes
        if list(k) != sorted(set(k)) or not all(0 <= x < self.length for x in k):
            raise bad("keyframes", k, f"sorted, distinct integers in [0, windows.length={self.length})")
        return self

    def for_inference(self) -> Self:
        """The windows inference slides: ``inference_length`` frames sharing ``inference_overlap``, keyframes at
        the same relative positions (0, 4, 8 of 12 → 0, 8, 16 of 24)."""
        n = self.inference_length
        keys = sorted({min(round(k * n / self.length), n - 1) for k in self.keyframes})
        return self.replace(length=n, overlap=self.inference_overlap, keyframes=keys)


class TeacherParams(Section):
    """The frozen teacher (a plug-in, :mod:`refiner.teachers.registry`); the simulated one draws each error
    parameter per clip from its [low, high] range. ``profiles`` are named variants of this section that a clip's
    ``teacher:`` may name (e.g. the simulated teacher with other ranges): :meth:`resolve`."""

    name: Str
    device: Str
    low_res_factor: Annotated[Literal[1, 2, 4, 8], BeforeValidator(int_only)]
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


class LossParams(Section):
    """Loss weights and thresholds (refiner/training/losses.py documents each term)."""

    ordered = (("lambda_gt", ">", "lambda_teacher"),)  # GT outranks the teacher

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
    w_pose: NonNeg
    pose_tol: Pos
    w_edge: NonNeg
    edge_sigma: Pos


class TrainParams(Section):
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


class AdaptParams(Section):
    """GT-free adaptation (refiner/inference/adapt.py) on ``clips`` (their teacher outputs only; GT is never read)."""

    clips: Seq[Str]
    steps: int = Field(ge=0)
    lr: Num = Field(gt=0, lt=1)
    batch_size: int = Field(ge=1)
    crop: int = Field(ge=8)
    seed: int = Field(ge=0)
    anchor_still: bool


class InferParams(Section):
    """Windowed inference, blending, drift control and exports."""

    ordered = (("min_depth_m", "<", "max_depth_m"),)

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


class ModelParams(Section):
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


class EvaluateParams(Section):
    """Scoring against GT and the baseline filters (refiner/evaluation/)."""

    ema_alpha: Num = Field(gt=0, le=1)
    bilateral_radius: int = Field(ge=0)
    sigma_depth_rel: Pos
    sigma_colour: Pos
    opw_weight: NonNeg
    tae_max_depth_m: Pos
    lpips_weights: str | None


class StereoParams(Section):
    """Left-to-right rendering for VR and its checks (refiner/geometry/warp.py)."""

    baseline_m: Pos
    pop_threshold_px: Pos
    max_video_frames: int | None = Field(ge=1)


class TestParams(Section):
    """The test stage (:mod:`refiner.inference.heldout_shard`): how many test clips run at once. Says how, not what:
    no stage re-runs for it."""

    workers: int = Field(ge=1)


class PrepareParams(Section):
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
