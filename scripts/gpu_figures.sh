#!/usr/bin/env bash
# The GPU figures of docs/PERFORMANCE.md in one run of about 8 minutes (scripts/gpu_figures.py says
# what it measures). On the device machine, from the repository root, with .device_data carried:
#     bash scripts/gpu_figures.sh --out "$OUT"
# A CPU dry run of every part, in seconds:
#     bash scripts/gpu_figures.sh --device cpu --dry-run --out /tmp/gpu_dry --data-dir DIR
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
# This checkout's code, imported from src/ (and so by every part's subprocess): nothing to install,
# which matters on a device machine without network (pip would fetch setuptools to build).
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if ! err=$("$PYTHON" -c "import simsiam.cli" 2>&1); then
  echo "error: the package does not import with this Python ($("$PYTHON" --version 2>&1)): ${err##*$'\n'}" >&2
  echo "       it needs torch, torchvision, numpy, pyyaml, matplotlib, scikit-learn, safetensors, tqdm, pillow" >&2
  exit 2
fi
exec "$PYTHON" scripts/gpu_figures.py "$@"
