#!/usr/bin/env bash
# Create .venv beside the repo's pyproject and install the plugin with its test tools.
# Usage: source scripts/setup_env.sh   (or: bash scripts/setup_env.sh)
# Installs Debian packages for the virtual display when run as root and they are missing.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

# chromium: the headless browser the batch report test renders report.html in.
apt_packages=(xvfb libgl1 libegl1 libgl1-mesa-dri libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4
  libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xinerama0
  libxcb-xfixes0 libdbus-1-3 libfontconfig1 chromium)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    missing=()
  else
    echo "warning: missing Debian packages (${missing[*]}); the napari and report tests need them: sudo apt-get install ${missing[*]}" >&2
  fi
fi

python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
# What could not be installed here (tests that need it skip, with a message, only when listed).
printf '%s\n' "${missing[@]}" > .venv/missing-debian-packages
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[testing]"
