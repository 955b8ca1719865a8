#!/usr/bin/env bash
# Robustness to teachers, on the test split per teacher group: one `dvc exp run` per training family, each trained
# from scratch on the default corpus with the same step budget, every test clip also adapted GT-free (adapt stage),
# up to the aggregate report (the stereo stage is skipped). Then one table per teacher group.
#   bash benchmarks/ablation_teachers.sh [STEPS]   (default 400 steps per row)
# Rows: narrow (today's training: each clip's stored teacher only, no noise inputs, no noise-aware clamp), wide
# (windows re-simulated from the sim_wide family, noise inputs, noise-aware clamp) and wide + the inference noise
# ceiling (the default; it re-uses wide's training from DVC's run cache), each without and with GT-free adaptation
# (refiner / refiner_adapt).
set -euo pipefail
export DVC_NO_ANALYTICS=1
export PYTHONPATH=.  # each queued run imports its own copy of refiner/, not the installed checkout
cd "$(dirname "$0")/.."
steps="${1:-400}"
tests=$(python -c "from refiner.core.config import load_params; print(','.join(load_params().corpus.test))")
base=(-S train.init=null -S "train.steps=$steps" -S train.lr=0.001 -S train.warmup_steps=20 -S train.eval_every=50)
base+=(-S "adapt.clips=[$tests]")
queue() { dvc exp run --queue -n "$1" "${base[@]}" "${@:2}" report; }
queue tabl-1-narrow -S train.resim_prob=0 -S model.noise_features=false -S model.clamp_noise=0 -S infer.noise_ceiling=0
queue tabl-2-wide -S infer.noise_ceiling=0
queue tabl-3-wide-ceiling
dvc exp run --run-all
python benchmarks/ablation_table.py --prefix tabl- --by-teacher
