"""Launch SOF on sawyer: `ros2 launch sof_ros sof_sawyer.launch.py [camera_source:=...] [checkpoint:=...] [record:=run.mcap] [rviz:=true]`.

The node list and parameters come from sof_ros.ros.graph (config/sawyer.yaml + these arguments), the
same source `sof-bringup sawyer` uses; this file only turns them into launch_ros actions.
"""
from sof_ros.ros.graph import launch_description


def generate_launch_description():
    return launch_description("sawyer")
