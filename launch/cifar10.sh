#!/usr/bin/env bash
# The CIFAR-10 grid of the papers: VDM's U-Net trained as BSI, BFN and VDM, one SLURM job each.
#   launch/cifar10.sh hydra.launcher.partition=gpu hydra.launcher.account=myproj [more overrides]
#   launch/cifar10.sh --dry-run [overrides]     prints the sbatch script of one job, submits nothing
# Python: $PYTHON, else python3 with bsi's dependencies, else .venv/bin/python (launch/python.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/python.sh
GRID=(experiment=cifar10_unet)
if [[ "${1:-}" == "--dry-run" ]]; then
  shift
  exec "$PY" launch/dry_run.py "${GRID[@]}" method=bsi "$@"
fi
exec "$PY" -m bsi.train -m hydra/launcher=slurm "${GRID[@]}" method=bsi,bfn,vdm resume=auto "$@"
