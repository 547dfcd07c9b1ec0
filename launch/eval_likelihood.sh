#!/usr/bin/env bash
# A likelihood-evaluation sweep over checkpoints: one SLURM job per checkpoint (or run directory).
#   launch/eval_likelihood.sh 'runs/*/checkpoints/step_*.pt' [overrides, e.g. likelihood.n_samples=4 hydra.launcher.partition=gpu]
#   launch/eval_likelihood.sh --dry-run 'runs/*/checkpoints/step_*.pt'
# Quote the pattern: the script expands it (** too), relative to the current directory.
# Python: $PYTHON, else python3 with bsi's dependencies, else .venv/bin/python (launch/python.sh).
set -euo pipefail
DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
if [[ $# -eq 0 ]]; then
  echo "error: give a pattern of checkpoint files, e.g. $0 'runs/*/checkpoints/best.pt'" >&2
  exit 2
fi
PATTERN=$1; shift
shopt -s nullglob globstar
CHECKPOINTS=()
for path in $PATTERN; do
  [[ -e $path ]] && CHECKPOINTS+=("$(cd "$(dirname "$path")" && pwd)/$(basename "$path")")
done
if [[ ${#CHECKPOINTS[@]} -eq 0 ]]; then
  echo "error: no checkpoint matches '$PATTERN' (in $(pwd)); quote the pattern so that this script expands it" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
source launch/python.sh
# Each path quoted for hydra, so that commas, spaces or '=' in a path stay part of it.
quoted=()
for path in "${CHECKPOINTS[@]}"; do quoted+=("'${path//\'/\\\'}'"); done
SWEEP=$(IFS=,; echo "${quoted[*]}")
if [[ $DRY == 1 ]]; then
  "$PY" launch/dry_run.py --config evaluate task=likelihood "checkpoint=${quoted[0]}" "$@" || exit $?
  echo "${#CHECKPOINTS[@]} checkpoint(s) match, one job each; above: the sbatch script of the first, ${CHECKPOINTS[0]}" >&2
  exit 0
fi
exec "$PY" -m bsi.evaluate likelihood -m hydra/launcher=slurm "checkpoint=$SWEEP" "$@"
