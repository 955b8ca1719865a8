#!/usr/bin/env bash
# The refiner's ablation on the test split: one `dvc exp run` per row, each trained from scratch on the default corpus
# with the same step budget (the shipped pretrained weights fit only the full model), up to the aggregate report
# (the stereo stage is skipped). Then one table of the test-split means.
#   bash benchmarks/ablation.sh [STEPS]   (default 400 steps per row: about 10 min a row on one CPU thread)
# Rows add one feature at a time: v0 (no carried state, no keyframe flag, no temporal blend, low-res SSM only),
# + carried Mamba state, + keyframe flag, + full-res temporal blend (the default model), + mid-res branch,
# + guided upsampling, and the default model under the former tight clamp (gamma 0.5, alpha 0.03).
set -euo pipefail
export DVC_NO_ANALYTICS=1
export PYTHONPATH=.  # each queued run imports its own copy of refiner/, not the installed checkout
cd "$(dirname "$0")/.."
steps="${1:-400}"
base=(-S train.init=null -S "train.steps=$steps" -S train.lr=0.001 -S train.warmup_steps=20 -S train.eval_every=50)
v0=(-S model.carry_state=false -S 'windows.keyframes=[]' -S model.temporal_blend=false)
queue() { dvc exp run --queue -n "$1" "${base[@]}" "${@:2}" report; }
queue abl-1-v0 "${v0[@]}"
queue abl-2-carry -S model.carry_state=true -S 'windows.keyframes=[]' -S model.temporal_blend=false
queue abl-3-keyframes -S model.carry_state=true -S model.temporal_blend=false
queue abl-4-blend
queue abl-5-midres -S model.midres_branch=true
queue abl-6-guided -S model.guided_upsampling=true
queue abl-7-clamp-tight -S model.clamp_gamma=0.5 -S model.clamp_alpha=0.03
dvc exp run --run-all
python benchmarks/ablation_table.py
