# Sourced by the launch scripts (from the repository root): sets PY, the Python that runs bsi.
#   $PYTHON if set; else python3 on PATH if it has bsi's dependencies (an activated venv or conda
#   environment); else this repository's .venv/bin/python (the README's Quickstart makes it).
# The jobs run on the same interpreter (submitit submits with it). Without one: one line, status 2.
has_bsi_dependencies() {
  "$1" -c "import importlib.util as u, sys
sys.exit(any(u.find_spec(m) is None for m in ('torch', 'hydra', 'submitit', 'hydra_plugins.hydra_submitit_launcher')))" 2>/dev/null
}
if [[ -n "${PYTHON:-}" ]]; then
  PY=$PYTHON
  has_bsi_dependencies "$PY" || { echo "error: PYTHON=$PY cannot import torch, hydra and submitit: set PYTHON to the python of the environment where bsi is installed (pip install -e .)" >&2; exit 2; }
elif has_bsi_dependencies python3; then
  PY=python3
elif has_bsi_dependencies .venv/bin/python; then
  PY=.venv/bin/python
else
  echo "error: no python with bsi's dependencies (torch, hydra, submitit): tried python3 on PATH and .venv/bin/python; activate the environment where you ran pip install -e ., or set PYTHON=/path/to/bin/python" >&2
  exit 2
fi
