#!/usr/bin/env bash
# Create benchmarks/.venv-atomap: a venv of its own holding atomap (and the HyperSpy stack it
# pulls), used only by benchmarks/bench_refine_speed.py through benchmarks/_atomap_refine.py.
# atomap is never installed into the package's own environment.
#
# Usage:  bash benchmarks/atomap_env.sh          (idempotent: does nothing when the venv works)
#         PYTHON=/path/to/python3.11 bash benchmarks/atomap_env.sh
#         FORCE=1 bash benchmarks/atomap_env.sh  (rebuild from scratch)
#
# Pins: a combination checked to import and fit with CPython 3.11 (atomap 0.4.2 on HyperSpy 2.5
# and NumPy 2.4; the newest releases of each worked together when this was written).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv-atomap"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"

PINS=(
    "atomap==0.4.2"
    "hyperspy==2.5.0"
    "exspy==0.3.2"
    "rosettasciio==0.15.0"
    "numpy==2.4.6"
    "scipy==1.17.1"
    "scikit-image==0.26.0"
    "scikit-learn==1.9.1"
    "matplotlib==3.11.2"
    "numba==0.68.1"
    "llvmlite==0.50.0"
    "dask==2026.8.0"
    "traits==7.3.0"
    "pint==0.25.3"
    "sympy==1.14.0"
    "ase==3.29.0"
    "h5py==3.16.0"
)

works() {
    [[ -x "$VENV/bin/python" ]] || return 1
    "$VENV/bin/python" - <<'EOF' >/dev/null 2>&1
import importlib.metadata as md
import warnings
warnings.simplefilter("ignore")
import numpy as np
import atomap.api as am
assert md.version("atomap") == "0.4.2"
img = np.zeros((21, 21))
yy, xx = np.mgrid[:21, :21]
img += 100 * np.exp(-((yy - 10.3) ** 2 + (xx - 9.6) ** 2) / (2 * 2.0**2)) + 1
sub = am.Sublattice([[10.0, 10.0]], img)
sub.refine_atom_positions_using_2d_gaussian(mask_radius=6, show_progressbar=False)
assert abs(sub.x_position[0] - 9.6) < 0.05 and abs(sub.y_position[0] - 10.3) < 0.05
EOF
}

if [[ "${FORCE:-0}" != "1" ]] && works; then
    echo "atomap venv OK: $VENV"
    exit 0
fi

echo "creating $VENV with $PYTHON ($("$PYTHON" --version 2>&1))"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "${PINS[@]}"

if works; then
    echo "atomap venv OK: $VENV"
else
    echo "atomap venv was created but its self-check failed: $VENV" >&2
    exit 1
fi
