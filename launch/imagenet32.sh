#!/usr/bin/env bash
# The ImageNet32 grid of the BSI paper: DiT-L/2 trained as BSI, BFN and VDM on 8 GPUs per run.
#   launch/imagenet32.sh hydra.launcher.partition=gpu [more overrides]
#   launch/imagenet32.sh --dry-run [overrides]  prints the sbatch script of one job, submits nothing
# Python: $PYTHON, else python3 with bsi's dependencies, else .venv/bin/python (launch/python.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/python.sh
GRID=(experiment=imagenet32_dit hydra.launcher.gpus_per_node=8 hydra.launcher.cpus_per_task=10 hydra.launcher.mem_gb=400)
if [[ "${1:-}" == "--dry-run" ]]; then
  shift
  exec "$PY" launch/dry_run.py "${GRID[@]}" method=bsi "$@"
fi
exec "$PY" -m bsi.train -m hydra/launcher=slurm "${GRID[@]}" method=bsi,bfn,vdm resume=auto "$@"
