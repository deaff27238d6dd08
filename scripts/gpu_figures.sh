#!/usr/bin/env bash
# The GPU figures of docs/PERFORMANCE.md in one run of about 8 minutes (scripts/gpu_figures.py says
# what it measures). On the device machine, from the repository root, with .device_data carried:
#     bash scripts/gpu_figures.sh --out "$OUT"
# A CPU dry run of every part, in seconds:
#     bash scripts/gpu_figures.sh --device cpu --dry-run --out /tmp/gpu_dry --data-dir DIR
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
# The device machine brings its own torch: install only this package, never its dependencies.
if ! "$PYTHON" -c "import simsiam" >/dev/null 2>&1; then
  "$PYTHON" -m pip install --quiet --no-deps -e . || { echo "error: could not install the package (pip install --no-deps -e .)" >&2; exit 2; }
fi
exec "$PYTHON" scripts/gpu_figures.py "$@"
