"""The arm's action units, shared by the importers that write action-labelled episodes (D_act):
an action of 1.0 moves the end effector robot.metres_per_action_unit metres in one control step."""
from __future__ import annotations

import argparse

from sof_ros.errors import SofError


def add_action_unit_args(p: argparse.ArgumentParser) -> None:
    from sof_ros.ros.params import ROBOT_PROFILES

    p.add_argument("--robot", default="metaworld_sawyer", choices=sorted(ROBOT_PROFILES),
                   help="arm whose action units the actions are written in (its robot.metres_per_action_unit)")
    p.add_argument("--metres-per-action-unit", type=float,
                   help="override the --robot profile's value (as in config/<robot>.yaml)")


def robot_units(a: argparse.Namespace) -> tuple[float, float]:
    """(metres per action unit, control steps per second) of the arm named by --robot."""
    from sof_ros.ros.params import RobotParams

    profile = RobotParams.profile(a.robot)
    value = profile.metres_per_action_unit if a.metres_per_action_unit is None else a.metres_per_action_unit
    if not value > 0:
        raise SofError(f"--metres-per-action-unit must be > 0, got {value}")
    return float(value), float(profile.control_rate_hz)
