"""Which arm a checkpoint drives, and the check that refuses a mismatched one.

A checkpoint records the simulator it was trained in (`sim.backend`, config.yaml) and so the
embodiment (MetaWorld: the Sawyer; LIBERO: the Franka Panda), the cameras of its videos
(`sim.camera`, `collect.cameras`) and the image size. A node driving a robot profile of another arm (`robot.name`) refuses the checkpoint with a
message that names both, instead of sending a Sawyer's motions to a Panda."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from sof_ros.errors import SofError

# robot profile (sof_ros.ros.params.ROBOT_PROFILES) -> arm
FAMILIES = {"metaworld_sawyer": "sawyer", "sawyer": "sawyer", "panda": "panda", "fr3": "panda"}  # FR3: the Panda's kinematics and hand
SHIPPED = {"sawyer": "models/sof_metaworld", "panda": "models/sof_libero"}


def checkpoint_problem(checkpoint: str | Path) -> str | None:
    """Why `checkpoint` cannot drive a node, or None. The real-arm configs ship without one: the
    checkpoints in models/ were trained in simulation, on a simulated camera."""
    if not str(checkpoint).strip():
        return ("agent.checkpoint is empty: set it to a checkpoint trained on this arm and camera "
                "(docs/on_your_robot.md); the shipped models/sof_libero and models/sof_metaworld were trained in "
                "simulation (sof-bringup panda --sim libero / sof_panda.launch.py sim:=libero runs the Panda one)")
    if not (Path(checkpoint) / "config.yaml").is_file():
        return (f"no SOF checkpoint at {checkpoint} (config.yaml missing); set agent.checkpoint (absolute, or "
                f"relative to the working directory), or train one: sof-train --config config/metaworld.yaml")
    return None


def robot_family(robot_name: str) -> str:
    return FAMILIES.get(robot_name, robot_name)


class Embodiment(NamedTuple):
    arm: str                 # "sawyer" | "panda"
    cameras: tuple[str, ...]  # "<simulator>:<camera>" of its videos, e.g. "metaworld:corner"; sim.camera first
    size: tuple[int, int]    # (W, H) of the frames it was trained on

    def __str__(self) -> str:
        return f"{' / '.join(self.cameras)} {self.size[0]}x{self.size[1]}"

    def trained_on(self, camera: str) -> bool:
        return camera in self.cameras


def video_cameras(cfg) -> list[str]:
    """The cameras a checkpoint's videos came from (a SofConfig): its own `sim.camera`, then
    `collect.cameras` -- Stages 1-2 learned from all of them."""
    return list(dict.fromkeys([cfg.sim.camera, *cfg.collect.cameras]))


def checkpoint_embodiment(checkpoint: str | Path) -> Embodiment | None:
    """The arm and camera a checkpoint was trained for, or None when it is not a sof_ros checkpoint
    (a module:Class policy, a test double)."""
    if not (Path(checkpoint) / "config.yaml").is_file():
        return None
    from sof_ros.config import load_checkpoint_config
    from sof_ros.sim import embodiment

    cfg = load_checkpoint_config(checkpoint)
    cameras = tuple(f"{cfg.sim.backend}:{c}" for c in video_cameras(cfg))
    return Embodiment(embodiment(cfg.sim), cameras, (cfg.sim.width, cfg.sim.height))


def check_embodiment(checkpoint: str | Path, robot_name: str) -> Embodiment | None:
    """SofError when `checkpoint` was trained for another arm than robot profile `robot_name`;
    else what it was trained for (None for a module:Class policy)."""
    found = checkpoint_embodiment(checkpoint)
    if found is None:
        return None
    robot = robot_family(robot_name)
    if found.arm != robot:
        hint = f"; the shipped {robot} checkpoint is {SHIPPED[robot]}" if robot in SHIPPED else ""
        raise SofError(f"checkpoint {checkpoint} was trained for the {found.arm} (camera {found}), but this node "
                       f"drives robot '{robot_name}' ({robot}): refusing to send another arm's motions{hint}")
    return found
