#!/usr/bin/env bash
# The test suite (what CI runs through .ci/run). Installs first when .venv is missing or stale.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider --timeout=900 test "$@"
