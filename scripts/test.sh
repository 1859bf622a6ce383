#!/usr/bin/env bash
# The test suite (what CI runs through .ci/run). Installs first when the venv is missing or stale.
#   ./scripts/test.sh [pytest args]                         on ROS 2 Jazzy (.venv), the default
#   SOF_ROS_DISTRO=kilted ./scripts/test.sh [pytest args]   on the Kilted-era ros-* wheels (.venv-kilted)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
venv=.venv
[ "${SOF_ROS_DISTRO:-jazzy}" = kilted ] && venv=.venv-kilted
# test files / node ids given: run those; otherwise (no args, or only options such as -k) the whole test/
args=(test "$@")
for a in "$@"; do [ -e "${a%%::*}" ] && { args=("$@"); break; }; done
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider --timeout=900 "${args[@]}"
