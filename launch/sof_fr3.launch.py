"""Launch SOF on fr3: `ros2 launch sof_ros sof_fr3.launch.py [camera_source:=...] [checkpoint:=...] [record:=run.mcap] [rviz:=true]`.

The node list and parameters come from sof_ros.ros.graph (config/fr3.yaml + these arguments), the
same source `sof-bringup fr3` uses; this file only turns them into launch_ros actions.
"""
from sof_ros.ros.graph import launch_description


def generate_launch_description():
    return launch_description("fr3")
