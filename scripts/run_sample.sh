#!/usr/bin/env bash
# Set up, then run the main job on a bundled sample: simulate the MoS2 sample with its
# ground truth, check its calibration and find its atom columns. Results land in out/sample/.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup_env.sh"
cd "$repo"
out="${1:-out/sample}"
.venv/bin/napari-stem-defects simulate --preset mos2_vacancies --out "$out"
.venv/bin/napari-stem-defects calibrate "$out/image.tif" --material MoS2
.venv/bin/napari-stem-defects analyze "$out/image.tif" --material MoS2 --out "$out/analysis"
echo "results in $out: image.tif, sites.csv, cells.csv, twin.json (ground truth); analysis/sites.csv, analysis/analysis.json"
