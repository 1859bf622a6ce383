#!/usr/bin/env bash
# Maintainers: regenerate a lock file from requirements.in in a throwaway venv (needs the index).
#   scripts/lock.sh          -> requirements.lock         ROS 2 Jazzy (ros-jazzy-* wheels), the default
#   scripts/lock.sh kilted   -> requirements-kilted.lock  the Kilted-era ros-* wheels (ros-jazzy-NAME -> ros-NAME)
# The non-ROS pins of the lock being replaced (or of requirements.lock) are kept as constraints, so
# both distros test the same stack; delete both locks first to move everything to the newest releases.
# Only distributions with .dist-info metadata are written: the ros wheels also install .egg-info
# copies of their Python packages (rclpy, std_msgs, ...), which exist on no index (git log 6efe272).
set -euo pipefail
cd "$(dirname "$0")/.."
distro=${1:-jazzy}
case "$distro" in
  jazzy) lock=requirements.lock; in_filter=(cat) ;;
  kilted) lock=requirements-kilted.lock; in_filter=(sed -E 's/^ros-jazzy-([a-z0-9-]+)(\[[a-z]+\])?/ros-\1/') ;;
  *) echo "usage: scripts/lock.sh [jazzy|kilted]" >&2; exit 2 ;;
esac
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"${in_filter[@]}" requirements.in > "$tmp/requirements.in"
: > "$tmp/constraints.txt"
for f in "$lock" requirements.lock; do
  if [ -f "$f" ]; then grep -v -i -E '^(ros-|torch==)' "$f" > "$tmp/constraints.txt"; break; fi
done
"$PY" -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q torch==2.13.0
"$tmp/venv/bin/pip" install -q -r "$tmp/requirements.in" -c "$tmp/constraints.txt"
"$tmp/venv/bin/python" - > "$lock" <<'PY'
import importlib.metadata as md
skip = {"pip", "setuptools", "wheel"}
dists = {}
for d in md.distributions():
    name = d.metadata["Name"]
    if str(getattr(d, "_path", "")).endswith(".dist-info") and name.lower() not in skip:
        dists[name] = d.version
for name in sorted(dists, key=str.lower):
    print(f"{name}=={dists[name]}")
PY
echo "wrote $lock ($(wc -l < "$lock") pins)"
