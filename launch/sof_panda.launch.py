"""Launch SOF on panda: `ros2 launch sof_ros sof_panda.launch.py [camera_source:=...] [checkpoint:=...] [record:=run.mcap] [rviz:=true] [sim:=libero]`.

The node list and parameters come from sof_ros.ros.graph (config/panda.yaml + these arguments), the
same source `sof-bringup panda` uses; this file only turns them into launch_ros actions.
`sim:=libero` is the simulation mode: the same nodes and parameters, plus the sim bridge playing the
Panda and its camera in LIBERO (config/panda_sim.yaml, docs/libero.md).
"""
from sof_ros.ros.graph import launch_description


def generate_launch_description():
    return launch_description("panda")
