"""Launch SOF on panda: `ros2 launch sof_ros sof_panda.launch.py [camera_source:=...] [checkpoint:=...] [record:=run.mcap] [rviz:=true]`.

The node list and parameters come from sof_ros.ros.graph (config/panda.yaml + these arguments), the
same source `sof-bringup panda` uses; this file only turns them into launch_ros actions.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from sof_ros.ros import graph

ROBOT = "panda"


def _nodes(context, *args, **kwargs):
    values = {name: LaunchConfiguration(name).perform(context) for name, _, _ in graph.LAUNCH_ARGUMENTS}
    robot = values.pop("robot") or ROBOT
    return [Node(**entry) for entry in graph.launch_description_entries(robot, **values)]


def generate_launch_description():
    args = [DeclareLaunchArgument(name, default_value=(default or ROBOT) if name == "robot" else default,
                                  description=description)
            for name, default, description in graph.LAUNCH_ARGUMENTS]
    return LaunchDescription(args + [OpaqueFunction(function=_nodes)])
