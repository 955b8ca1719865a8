"""Pretrained refiner weights, produced by one reproducible command from a larger synthetic corpus.

    python -m refiner.training.pretrain --clips 16 --steps 1500 --out models/pretrained

builds ``--clips`` training scenes and one validation scene (names ``pre_000``…, seeds from ``--seed``;
none shares a name or a seed with the default corpus, so the default test clips are never seen), with the
model, loss, window and teacher settings of ``params.yaml``; every ``--learned-every``-th training scene is
taught by the ``learned`` network teacher (rendered with :data:`SENSOR` noise, as the corpus's learned clips
are), the others by the simulated one (whose windows training also re-simulates from the wide family,
``train.resim_*``). It trains ``--steps`` steps and writes
``refiner.safetensors`` and ``provenance.json`` (command, params, seeds, val figures) to ``--out``. The
default pipeline fine-tunes from them (``train.init``). The temporary corpus lives in ``--work``.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from pathlib import Path

from refiner.core.choices import CAMERA_PATHS
from refiner.core.config import load_params
from refiner.core.store import write_json
from refiner.data.guidance import write_guidance
from refiner.data.ingest import ingest_video
from refiner.data.manifest import calibrate, clip_entry, write_manifest
from refiner.data.synth.clips import render_to
from refiner.teachers.cache import write_teacher_store
from refiner.training.train import train

PRETRAIN_SCHEDULE = {"init": None, "lr": 0.001, "warmup_steps": 20, "eval_every": 50}  # from scratch, whatever
# params.yaml's train: says (the default pipeline fine-tunes with a shorter, gentler schedule)


SENSOR = {"sensor_noise": 0.01, "exposure_jitter": 0.03}  # the rendering of a clip a network teacher sees


def build_clip(work: Path, name: str, seed: int, camera_path: str, params, teacher: str = "simulated") -> dict:
    """Render, decode, run the teacher and the guidance maps for one synthetic clip; its manifest entry."""
    d, s = work / name, params.corpus.synthetic
    spec = s.replace(camera_path=camera_path, **(SENSOR if teacher == "learned" else {}))
    render_to(d / "synth", spec, seed)
    ingest_video(
        d / "synth/clip.mp4",
        d / "synth/camera.json",
        d / "decoded.zarr",
        params.decode.size,
        gt=d / "synth/gt.zarr",
        progress=False,
        multiple=params.teacher.low_res_factor,  # the decode stage's grid
        crop=params.decode.crop,
    )
    tp = params.teacher.resolve(teacher)
    write_teacher_store(d / "decoded.zarr", d / "teacher.zarr", tp, name, progress=False, group=teacher)
    write_guidance(d / "decoded.zarr", d / "teacher.zarr", d / "guidance.zarr", progress=False)
    return clip_entry(name, str(d / "decoded.zarr"), str(d / "teacher.zarr"), str(d / "guidance.zarr"))


def pretrain(clips: int, steps: int, seed: int, out: Path, work: Path, learned_every: int = 0) -> dict:
    params = load_params()
    seeds = [seed + i for i in range(clips + 1)]
    used = {c.seed for c in params.corpus.clips.values() if c.kind == "synthetic"}
    if used & set(seeds):
        raise ValueError(
            f"--seed {seed}: seeds {sorted(used & set(seeds))} are used by the default corpus; pick another"
        )

    def teacher(i: int) -> str:
        return "learned" if learned_every and i < clips and i % learned_every == learned_every - 1 else "simulated"

    entries = [
        build_clip(work / "clips", f"pre_{i:03d}", s, CAMERA_PATHS[i % len(CAMERA_PATHS)], params, teacher(i))
        for i, s in enumerate(seeds)
    ]
    splits = {"train": entries[:-1], "val": entries[-1:], "test": []}
    tp = params.teacher
    write_manifest(work / "manifest", *calibrate(splits, tp.calibration_bins, tp.calibration_fallback))
    run = params.merged({"train": {**PRETRAIN_SCHEDULE, "steps": steps}})
    metrics = train(run, work / "manifest", out / "refiner.safetensors", work / "state", work / "reports")
    digest = hashlib.sha256((out / "refiner.safetensors").read_bytes()).hexdigest()
    provenance = {
        "command": " ".join(["python -m refiner.training.pretrain", *sys.argv[1:]]),
        "seeds": seeds,
        "clip_names": [e["name"] for e in entries],
        "teachers": {e["name"]: e["teacher_name"] for e in entries},
        "params": run.model_dump(mode="json"),
        "val_metrics": metrics,
        "sha256": digest,
    }
    write_json(out / "provenance.json", provenance)
    return provenance


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=16, help="training scenes (one more is rendered for validation)")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=1000, help="first scene seed (must not collide with the corpus)")
    ap.add_argument("--learned-every", type=int, default=4, help="every k-th training scene: the learned teacher")
    ap.add_argument("--out", type=Path, default=Path("models/pretrained"))
    ap.add_argument("--work", type=Path, default=Path(".cache/pretrain"))
    a = ap.parse_args(argv)
    shutil.rmtree(a.work, ignore_errors=True)
    p = pretrain(a.clips, a.steps, a.seed, a.out, a.work, a.learned_every)
    print(f"wrote {a.out}/refiner.safetensors (best step {p['val_metrics'].get('best_step')})")


if __name__ == "__main__":
    main()
