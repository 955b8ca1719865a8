#!/usr/bin/env bash
# The refiner's ablation on the test split: one `dvc exp run` per row, each trained from scratch on the default
# corpus (the shipped pretrained weights fit only the full model), then one table of the test-split means.
#   bash benchmarks/ablation.sh [STEPS]     (default 1500 steps per row; hours on a 2-core CPU, minutes on a GPU)
set -euo pipefail
export DVC_NO_ANALYTICS=1
cd "$(dirname "$0")/.."
steps="${1:-1500}"
base=(-S train.init=null -S "train.steps=$steps" -S train.lr=0.001 -S train.warmup_steps=20 -S train.eval_every=50)
v0=(-S model.carry_state=false -S model.temporal_blend=false -S model.midres_branch=false -S model.guided_upsampling=false)
queue() { dvc exp run --queue -n "$1" "${base[@]}" "${@:2}"; }
queue abl-v0 "${v0[@]}"
queue abl-carry "${v0[@]}" -S model.carry_state=true
queue abl-carry-blend -S model.carry_state=true -S model.temporal_blend=true
queue abl-midres -S model.midres_branch=true
queue abl-guided -S model.guided_upsampling=true
queue abl-clamp-tight -S model.clamp_gamma=0.5 -S model.clamp_alpha=0.03
dvc exp run --run-all
dvc exp show --md --drop '.*' --keep 'Experiment|^model\.|methods\.(refiner|bilateral)\.(flicker_std_rel|tae|tae_vda|absrel|opw_nvds)$'
