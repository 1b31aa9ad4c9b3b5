#!/usr/bin/env bash
# Set up (fresh .venv, Debian packages for Xvfb) and run the whole test suite headless.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup_env.sh"
cd "$repo"
.venv/bin/python -m pytest --doctest-modules src tests "$@"
