"""Typed view of ``params.yaml``: one dataclass per section, validated on load.

Every stage calls :func:`load_params` and reads its own section by name. An invalid
value raises :class:`ConfigError` naming the key, the value and the allowed range.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A value in params.yaml is missing, unknown or out of range."""


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"params.yaml: {key} = {value!r} is invalid; allowed: {allowed}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class SynthParams:
    """The embedded synthetic clip: a rendered room with ground truth."""

    seed: int = 0
    width: int = 320
    height: int = 256
    frames: int = 64
    static_frames: int = 24
    fps: int = 24
    fov_deg: float = 70.0
    baseline_m: float = 0.063
    crf: int = 12

    def validate(self) -> None:
        p = "synth."
        _require(_is_int(self.seed) and self.seed >= 0, p + "seed", self.seed, "integer >= 0")
        for name in ("width", "height"):
            v = getattr(self, name)
            _require(
                _is_int(v) and 16 <= v <= 4096 and v % 2 == 0,
                p + name,
                v,
                "even integer in [16, 4096] (H.264 needs even sizes)",
            )
        _require(_is_int(self.frames) and self.frames >= 2, p + "frames", self.frames, "integer >= 2")
        _require(
            _is_int(self.static_frames) and 0 <= self.static_frames <= self.frames,
            p + "static_frames",
            self.static_frames,
            f"integer in [0, synth.frames={self.frames}]",
        )
        _require(_is_int(self.fps) and 1 <= self.fps <= 240, p + "fps", self.fps, "integer in [1, 240]")
        _require(_is_num(self.fov_deg) and 10 < self.fov_deg < 170, p + "fov_deg", self.fov_deg, "degrees in (10, 170)")
        _require(
            _is_num(self.baseline_m) and 0 < self.baseline_m <= 1,
            p + "baseline_m",
            self.baseline_m,
            "metres in (0, 1]",
        )
        _require(_is_int(self.crf) and 0 <= self.crf <= 51, p + "crf", self.crf, "integer in [0, 51]")


@dataclass(frozen=True)
class DecodeParams:
    """Which video (or data set folder) to decode and the canonical resize/pad applied to it."""

    video: str = "data/synth/clip.mp4"
    intrinsics: str = "data/synth/camera.json"
    gt: str | None = "data/synth/gt.zarr"
    stride: int = 1
    size: int = 256
    source_kind: str = "video"
    camera: dict[str, float] | None = None

    def validate(self) -> None:
        p = "decode."
        kinds = ("video", "tum", "hypersim")  # refiner.adapters.KINDS
        _require(self.source_kind in kinds, p + "source_kind", self.source_kind, "one of " + ", ".join(kinds))
        _require(
            isinstance(self.video, str) and self.video != "",
            p + "video",
            self.video,
            "path to a video file (source_kind video) or a data set folder (tum, hypersim)",
        )
        _require(
            isinstance(self.intrinsics, str) and self.intrinsics != "",
            p + "intrinsics",
            self.intrinsics,
            "path to a JSON/YAML file with fx, fy, cx, cy or hfov_deg",
        )
        _require(self.gt is None or isinstance(self.gt, str), p + "gt", self.gt, "path to a GT Zarr store or null")
        _require(_is_int(self.stride) and self.stride >= 1, p + "stride", self.stride, "integer >= 1")
        _require(
            _is_int(self.size) and 16 <= self.size <= 4096 and self.size % 2 == 0,
            p + "size",
            self.size,
            "even integer in [16, 4096]",
        )
        cam = self.camera
        _require(
            cam is None
            or (
                isinstance(cam, dict)
                and set(cam) == {"fx", "fy", "cx", "cy"}
                and all(_is_num(v) and math.isfinite(v) for v in cam.values())
                and cam["fx"] > 0
                and cam["fy"] > 0
            ),
            p + "camera",
            cam,
            "null or {fx, fy, cx, cy} in pixels of the data set's images, fx and fy > 0",
        )
        _require(
            cam is None or self.source_kind != "video",
            p + "camera",
            cam,
            "null when decode.source_kind is video (give a video's camera in decode.intrinsics)",
        )


@dataclass(frozen=True)
class WindowParams:
    """Temporal windows shared by training and inference."""

    length: int = 12
    overlap: int = 6
    keyframes: list[int] = field(default_factory=lambda: [0, 4, 8])

    def validate(self) -> None:
        p = "windows."
        _require(_is_int(self.length) and self.length >= 2, p + "length", self.length, "integer >= 2")
        _require(
            _is_int(self.overlap) and 0 <= self.overlap < self.length,
            p + "overlap",
            self.overlap,
            f"integer in [0, windows.length={self.length})",
        )
        _require(
            isinstance(self.keyframes, list)
            and all(_is_int(k) and 0 <= k < self.length for k in self.keyframes)
            and len(set(self.keyframes)) == len(self.keyframes),
            p + "keyframes",
            self.keyframes,
            f"distinct integers in [0, windows.length={self.length})",
        )


def _check_fraction(section: str, obj: object, names: tuple[str, ...]) -> None:
    for name in names:
        v = getattr(obj, name)
        _require(_is_num(v) and 0 <= v <= 1, f"{section}.{name}", v, "number in [0, 1]")


def _check_nonneg(section: str, obj: object, names: tuple[str, ...]) -> None:
    for name in names:
        v = getattr(obj, name)
        _require(_is_num(v) and v >= 0, f"{section}.{name}", v, "number >= 0")


def _check_bool(section: str, obj: object, names: tuple[str, ...]) -> None:
    for name in names:
        v = getattr(obj, name)
        _require(isinstance(v, bool), f"{section}.{name}", v, "true or false")


@dataclass(frozen=True)
class TeacherParams:
    """The frozen teacher and, for the simulated stand-in, the errors it makes (refiner/teachers/)."""

    name: str = "simulated"  # simulated | unidepth
    low_res_factor: int = 4  # the SSM grid is S / factor
    seed: int = 0
    scale_std: float = 0.03  # per-frame global log-scale error (AR(1))
    scale_corr: float = 0.5  # its lag-1 correlation
    jump_prob: float = 0.05  # chance per frame of a new persistent scale jump
    jump_std: float = 0.04
    warp_amp: float = 0.03  # low-frequency multiplicative warp, log amplitude
    warp_drift: float = 0.15  # radians per frame the warp phases move
    noise_rel: float = 0.01  # i.i.d. depth-proportional noise
    edge_blur_px: float = 1.5  # depth bleeding across edges (Gaussian sigma, pixels)
    uncertainty_noise: float = 0.5  # how loosely the uncertainty follows the error (log-normal sigma)
    calibration_bins: int = 10
    unidepth_weights: str = "models/unidepth-v2-vits14"  # folder with config.json + model.safetensors
    unidepth_resolution_level: int = 9  # 0-9, UniDepthV2 internal resolution (0.2-0.6 MP)

    def validate(self) -> None:
        p = "teacher."
        _require(self.name in ("simulated", "unidepth"), p + "name", self.name, "simulated or unidepth")
        _require(self.low_res_factor in (1, 2, 4, 8), p + "low_res_factor", self.low_res_factor, "one of 1, 2, 4, 8")
        _require(_is_int(self.seed) and self.seed >= 0, p + "seed", self.seed, "integer >= 0")
        _check_nonneg(
            "teacher",
            self,
            ("scale_std", "jump_std", "warp_amp", "warp_drift", "noise_rel", "edge_blur_px", "uncertainty_noise"),
        )
        _check_fraction("teacher", self, ("jump_prob",))
        _require(0 <= self.scale_corr < 1, p + "scale_corr", self.scale_corr, "number in [0, 1)")
        _require(
            _is_int(self.calibration_bins) and self.calibration_bins >= 2,
            p + "calibration_bins",
            self.calibration_bins,
            "integer >= 2",
        )
        _require(
            _is_int(self.unidepth_resolution_level) and 0 <= self.unidepth_resolution_level <= 9,
            p + "unidepth_resolution_level",
            self.unidepth_resolution_level,
            "integer in 0..9",
        )


@dataclass(frozen=True)
class LossParams:
    """Loss weights and thresholds (see refiner/losses.py for each term)."""

    lambda_teacher: float = 1.0
    lambda_gt: float = 2.0
    teacher_l1: float = 0.01
    w_temp: float = 8.0
    temp_tau: float = 0.08
    temp_tau_depth: float = 0.02
    temp_k: float = 1.0
    temp_photo_threshold: float = 0.04
    lambda_res: float = 0.05
    residual_mean_weight: float = 0.1
    w_var: float = 0.1
    var_conf_threshold: float = 0.5
    w_edge: float = 0.0
    edge_sigma: float = 0.1

    def validate(self) -> None:
        _check_nonneg("loss", self, tuple(f.name for f in dataclasses.fields(self)))
        _require(
            self.lambda_gt > self.lambda_teacher,
            "loss.lambda_gt",
            self.lambda_gt,
            f"> loss.lambda_teacher={self.lambda_teacher} (GT outranks the teacher on GT windows)",
        )
        _require(self.edge_sigma > 0, "loss.edge_sigma", self.edge_sigma, "number > 0")


@dataclass(frozen=True)
class TrainParams:
    """The training loop: optimiser, schedule, augmentation and the held-out split."""

    seed: int = 0
    steps: int = 300
    batch_size: int = 2
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 20
    grad_clip: float = 1.0
    ema_decay: float = 0.98
    amp: str = "none"
    crop: int = 96
    holdout_frames: int = 12
    eval_every: int = 50
    reverse_prob: float = 0.2
    jitter_prob: float = 0.5
    jitter_scale: float = 0.03
    jitter_noise_rel: float = 0.01
    gt_fraction: float = 0.08
    guard_absrel: float = 0.005
    num_workers: int = 0

    def validate(self) -> None:
        p = "train."
        for name in ("steps", "batch_size", "eval_every"):
            v = getattr(self, name)
            _require(_is_int(v) and v >= 1, p + name, v, "integer >= 1")
        for name in ("seed", "warmup_steps", "num_workers", "holdout_frames"):
            v = getattr(self, name)
            _require(_is_int(v) and v >= 0, p + name, v, "integer >= 0")
        _require(_is_num(self.lr) and 0 < self.lr < 1, p + "lr", self.lr, "number in (0, 1)")
        _check_nonneg("train", self, ("weight_decay", "grad_clip", "jitter_noise_rel", "guard_absrel"))
        _check_fraction("train", self, ("ema_decay", "reverse_prob", "jitter_prob", "gt_fraction"))
        _require(0 <= self.jitter_scale < 0.5, p + "jitter_scale", self.jitter_scale, "number in [0, 0.5)")
        _require(self.amp in ("none", "bf16", "fp16"), p + "amp", self.amp, "one of none, bf16, fp16")
        _require(
            _is_int(self.crop) and self.crop >= 8,
            p + "crop",
            self.crop,
            "integer >= 8 (multiple of the low-res factor)",
        )


@dataclass(frozen=True)
class InferParams:
    """Windowed inference, blending, drift control and exports."""

    confidence_ema: float = 0.0  # eta of the temporal EMA of c(x); 0 = off, e.g. 0.8
    keyframe_tau: float = 2.0  # frames; decay of keyframe influence in blending
    keyframe_boost: float = 0.0  # 0 = plain quadratic blending
    occlusion_gating: bool = False  # down-weight, per pixel, windows that see the colour change there
    hard_clamp: bool = True  # residual clamp hard (not tanh-soft) at inference
    min_depth_m: float = 0.05
    max_depth_m: float = 100.0
    reanchor_every: int = 0  # windows; remove the per-window mean of ΔD/D every k windows (0 = never)
    drift_warn_rel: float = 0.02  # warn when refined/teacher (centre-patch medians) trends by more than this
    drift_patch: float = 0.25  # side of the centred patch, as a fraction of the frame
    export_npy: bool = False
    export_png16: bool = False  # uint16 PNG, depth in millimetres (0 = invalid), up to 65.535 m

    def validate(self) -> None:
        p = "infer."
        _check_fraction("infer", self, ("confidence_ema", "drift_patch"))
        _check_nonneg("infer", self, ("keyframe_tau", "keyframe_boost", "drift_warn_rel"))
        _require(
            _is_num(self.min_depth_m) and 0 < self.min_depth_m < self.max_depth_m,
            p + "min_depth_m",
            self.min_depth_m,
            f"number in (0, infer.max_depth_m={self.max_depth_m})",
        )
        _require(
            _is_int(self.reanchor_every) and self.reanchor_every >= 0,
            p + "reanchor_every",
            self.reanchor_every,
            "integer >= 0",
        )
        _check_bool("infer", self, ("hard_clamp", "occlusion_gating", "export_npy", "export_png16"))


@dataclass(frozen=True)
class EvaluateParams:
    """Scoring against GT and the baseline filters (refiner/metrics.py, refiner/baselines.py)."""

    ema_alpha: float = 0.3  # EMA baseline: weight of the new frame
    bilateral_radius: int = 3  # temporal bilateral baseline: frames each side
    sigma_depth_rel: float = 0.05
    sigma_colour: float = 0.1
    opw_weight: float = 50.0  # OPW photometric weight exp(-w * |dI|^2)
    static_patch: float = 0.25  # centred patch (fraction of the side) for the scale-drift curve
    align_disparity: bool = False  # also report per-clip affine-in-disparity aligned AbsRel (relative-depth papers)
    baseline_m: float = 0.063  # stereo baseline for disparity jitter when the clip does not state one

    def validate(self) -> None:
        p = "evaluate."
        _require(_is_num(self.ema_alpha) and 0 < self.ema_alpha <= 1, p + "ema_alpha", self.ema_alpha, "in (0, 1]")
        _require(
            _is_int(self.bilateral_radius) and self.bilateral_radius >= 0,
            p + "bilateral_radius",
            self.bilateral_radius,
            "integer >= 0",
        )
        for name in ("sigma_depth_rel", "sigma_colour", "baseline_m"):
            v = getattr(self, name)
            _require(_is_num(v) and v > 0, p + name, v, "number > 0")
        _check_nonneg("evaluate", self, ("opw_weight",))
        _check_fraction("evaluate", self, ("static_patch",))
        _check_bool("evaluate", self, ("align_disparity",))


@dataclass(frozen=True)
class HoldoutParams:
    """The held-out synthetic clip (refiner/holdout.py): another scene, never trained on."""

    seed: int = 1  # must differ from synth.seed
    frames: int = 32
    static_frames: int = 16  # still-camera frames at the start (static flicker is measured there)

    def validate(self) -> None:
        p = "holdout."
        _require(_is_int(self.seed) and self.seed >= 0, p + "seed", self.seed, "integer >= 0")
        _require(_is_int(self.frames) and self.frames >= 2, p + "frames", self.frames, "integer >= 2")
        _require(
            _is_int(self.static_frames) and 0 <= self.static_frames <= self.frames,
            p + "static_frames",
            self.static_frames,
            f"integer in [0, holdout.frames={self.frames}]",
        )


@dataclass(frozen=True)
class StereoParams:
    """Left→right rendering for VR and its checks (refiner/stereo.py)."""

    baseline_m: float = 0.063  # eye separation when the clip does not state one (decoded attr baseline_m wins)
    pop_threshold_px: float = 0.15  # a static-region disparity change above this between frames is a "pop"
    max_video_frames: int | None = None  # cap on the side-by-side mp4 length (None = whole clip)

    def validate(self) -> None:
        p = "stereo."
        for name in ("baseline_m", "pop_threshold_px"):
            v = getattr(self, name)
            _require(_is_num(v) and v > 0, p + name, v, "number > 0")
        v = self.max_video_frames
        _require(v is None or (_is_int(v) and v >= 1), p + "max_video_frames", v, "null or integer >= 1")


@dataclass(frozen=True)
class ModelParams:
    """The refiner architecture (refiner/model/refiner.py) and its residual clamp."""

    channels: int = 32  # CNN width
    ssm_hidden: int = 64  # Mamba d_model
    d_state: int = 8
    d_conv: int = 4
    expand: int = 1
    bidirectional: bool = True  # also scan each window backwards in time (offline per window)
    use_conf_grad: bool = False  # extra inputs: d/dx, d/dy of c(x)
    use_time_encoding: bool = True  # extra inputs: sin/cos of the frame's place in the window
    use_rgb_edges: bool = False  # extra input: Sobel magnitude of RGB at the low-res grid
    depth_aware_mixing: bool = False  # depth-gated dilated conv at the low-res grid
    highres_refine: bool = False  # full-res CNN adding an edge correction to the upsampled residual
    guided_upsampling: bool = False  # edge-aware upsampling of the residual, guided by teacher log depth
    midres_branch: bool = False  # a second SSM branch at twice the low-res grid, fused by a learned gate
    clamp_alpha: float = 0.05  # B(x) = max(alpha·D, beta)·(gamma + 1 − c)
    clamp_beta: float = 0.02
    clamp_gamma: float = 0.5
    use_mamba_ssm: str = "auto"  # auto: CUDA kernels when importable on a GPU; never: pure PyTorch always

    def validate(self) -> None:
        p = "model."
        for name in ("channels", "ssm_hidden", "d_state", "d_conv", "expand"):
            v = getattr(self, name)
            _require(_is_int(v) and v >= 1, p + name, v, "integer >= 1")
        _require(self.channels >= 2, p + "channels", self.channels, "integer >= 2")
        _check_bool(
            "model",
            self,
            (
                "bidirectional",
                "use_conf_grad",
                "use_time_encoding",
                "use_rgb_edges",
                "depth_aware_mixing",
                "highres_refine",
                "guided_upsampling",
                "midres_branch",
            ),
        )
        _check_nonneg("model", self, ("clamp_alpha", "clamp_beta", "clamp_gamma"))
        _require(self.clamp_alpha > 0 or self.clamp_beta > 0, p + "clamp_alpha", self.clamp_alpha, "> 0 or beta > 0")
        _require(self.use_mamba_ssm in ("auto", "never"), p + "use_mamba_ssm", self.use_mamba_ssm, "auto or never")


@dataclass(frozen=True)
class Params:
    """All of params.yaml."""

    synth: SynthParams = field(default_factory=SynthParams)
    decode: DecodeParams = field(default_factory=DecodeParams)
    windows: WindowParams = field(default_factory=WindowParams)
    teacher: TeacherParams = field(default_factory=TeacherParams)
    loss: LossParams = field(default_factory=LossParams)
    train: TrainParams = field(default_factory=TrainParams)
    infer: InferParams = field(default_factory=InferParams)
    model: ModelParams = field(default_factory=ModelParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    holdout: HoldoutParams = field(default_factory=HoldoutParams)
    stereo: StereoParams = field(default_factory=StereoParams)


_SECTIONS: dict[str, type] = {
    "synth": SynthParams,
    "decode": DecodeParams,
    "windows": WindowParams,
    "teacher": TeacherParams,
    "loss": LossParams,
    "train": TrainParams,
    "infer": InferParams,
    "model": ModelParams,
    "evaluate": EvaluateParams,
    "holdout": HoldoutParams,
    "stereo": StereoParams,
}


def _build_section(cls: type, name: str, raw: Any) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"params.yaml: section '{name}' must be a mapping, got {type(raw).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"params.yaml: unknown key(s) {', '.join(f'{name}.{k}' for k in unknown)}; known keys: {sorted(known)}"
        )
    section = cls(**raw)
    section.validate()
    return section


def params_from_dict(raw: dict[str, Any]) -> Params:
    """Build and validate :class:`Params` from a parsed params.yaml mapping."""
    if not isinstance(raw, dict):
        raise ConfigError("params.yaml must be a mapping of sections")
    classes = _SECTIONS
    unknown = sorted(set(raw) - set(classes))
    if unknown:
        raise ConfigError(f"params.yaml: unknown section(s) {unknown}; known sections: {sorted(classes)}")
    return Params(**{name: _build_section(cls, name, raw.get(name)) for name, cls in classes.items()})


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; raises ConfigError with the key at fault."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} not found; run from the repository root or pass the path to params.yaml")
    with path.open() as f:
        raw = yaml.safe_load(f) or {}
    return params_from_dict(raw)
