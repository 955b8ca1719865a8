#!/usr/bin/env bash
# One-time set-up: a virtual environment in .venv with the project and its test tools.
set -euo pipefail
export DVC_NO_ANALYTICS=1
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev]"
