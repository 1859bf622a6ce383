"""sof_ros: learning manipulation skills from action-free videos (SOF) for ROS 2 arms.

The learning core (sim, data, flow, skills, policy, flow2action) never imports rclpy;
`sof_ros.ros` holds the thin ROS 2 adapters.
"""
__version__ = "0.1.0"
