#!/usr/bin/env bash
# A likelihood-evaluation sweep over checkpoints: one SLURM job per checkpoint.
#   launch/eval_likelihood.sh 'runs/*/checkpoints/step_*.pt' [overrides, e.g. n_samples=4 hydra.launcher.partition=gpu]
#   launch/eval_likelihood.sh --dry-run 'runs/*/checkpoints/step_*.pt'
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
PATTERN="${1:?give a glob of checkpoint files}"; shift
CHECKPOINTS=$(ls $PATTERN | paste -sd, -)
[[ -n "$CHECKPOINTS" ]] || { echo "no checkpoint matches $PATTERN" >&2; exit 2; }
if [[ $DRY == 1 ]]; then
  exec python launch/dry_run.py --config evaluate "checkpoint=${CHECKPOINTS%%,*}" "$@"
fi
exec python -m bsi.evaluate likelihood -m hydra/launcher=slurm "checkpoint=$CHECKPOINTS" "$@"
