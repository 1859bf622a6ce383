"""sof_ros: learning manipulation skills from action-free videos (SOF) for ROS 2 arms.

The learning core (sim, data, flow, skills, policy, flow2action) never imports rclpy;
`sof_ros.ros` holds the thin ROS 2 adapters.
"""
import os as _os

# MuJoCo picks its GL backend at first import; headless CPU rendering needs OSMesa (EGL fails
# for MetaWorld here). Set before any submodule can import mujoco.
_os.environ.setdefault("MUJOCO_GL", "osmesa")
_os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")

__version__ = "0.1.0"
