#!/usr/bin/env bash
# Install everything sof_ros needs into ./.venv on Debian 12 / Python 3.11 (no GPU needed).
# Idempotent: re-running only installs what changed. torch is the CPU build (2.13.0); nothing
# here can pull a CUDA build because every package is pinned in requirements.lock.
set -euo pipefail
cd "$(dirname "$0")/.."

debs=(libosmesa6 libegl1 libegl-mesa0 libgl1-mesa-dri ffmpeg)
missing=()
for d in "${debs[@]}"; do dpkg -s "$d" >/dev/null 2>&1 || missing+=("$d"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[install] Debian packages for headless rendering: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || {
    $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q "${missing[@]}" >/dev/null; }
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  echo "[install] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.sof_ros_lock
if [ ! -f "$stamp" ] || ! cmp -s requirements.lock "$stamp"; then
  echo "[install] torch 2.13.0 (CPU build) first, then the pinned lock (a few minutes)"
  .venv/bin/pip install -q torch==2.13.0
  .venv/bin/pip install -q -r requirements.lock
  cp requirements.lock "$stamp"
fi
.venv/bin/pip install -q --no-deps --no-build-isolation -e .
.venv/bin/python -c "import torch, rclpy, mujoco, metaworld, cv2, vector_quantize_pytorch; \
assert not torch.version.cuda, 'a CUDA torch was installed; expected the CPU build'; \
print('[install] ok: torch', torch.__version__, '| mujoco', mujoco.__version__, '| rclpy + Fast DDS')"
