"""Simulated arms rendering RGB, depth, segmentation and camera models headlessly: MetaWorld (Sawyer,
`metaworld_env`) and LIBERO (Franka Panda, `libero_env`), chosen by `SimConfig.backend`.

Everything outside this package builds arms and experts through `make_arm` / `make_expert`, so a
config with `sim.backend: libero` runs the same collection, evaluation and ROS bridge code."""
from __future__ import annotations

BACKENDS = ("metaworld", "libero", "robosuite")
# The arm each simulator's checkpoints are trained for (sof_ros.ros.params robot profiles map onto these).
EMBODIMENT = {"metaworld": "sawyer", "libero": "panda"}


def backend_of(sim_cfg) -> str:
    from sof_ros.errors import SofError

    backend = getattr(sim_cfg, "backend", "metaworld") or "metaworld"
    if backend not in BACKENDS:
        raise SofError(f"unknown sim.backend '{backend}'; choose one of: {', '.join(BACKENDS)}")
    return backend


def make_arm(task: str, sim_cfg, camera: str | None = None, with_depth: bool = True):
    """The simulated arm for `task` (MetaWorldArm, LiberoArm or RobosuiteArm, same interface)."""
    if backend_of(sim_cfg) == "robosuite":
        from sof_ros.sim.robosuite_env import RobosuiteArm

        return RobosuiteArm(task, sim_cfg, camera=camera, with_depth=with_depth)
    if backend_of(sim_cfg) == "libero":
        from sof_ros.sim.libero_env import LiberoArm

        return LiberoArm(task, sim_cfg, camera=camera, with_depth=with_depth)
    from sof_ros.sim.metaworld_env import MetaWorldArm

    return MetaWorldArm(task, sim_cfg, camera=camera, with_depth=with_depth)


def make_expert(task: str, sim_cfg):
    """The scripted expert for `task`: `reset()` (when it has one) and `get_action(obs.state)`."""
    if backend_of(sim_cfg) == "robosuite":
        from sof_ros.sim.robosuite_env import expert_for as robosuite_expert

        return robosuite_expert(task)
    if backend_of(sim_cfg) == "libero":
        from sof_ros.sim.libero_experts import expert_for

        return expert_for(task)
    from sof_ros.sim.metaworld_env import expert_policy

    return expert_policy(task)


def instruction_for(task: str, sim_cfg) -> str:
    if backend_of(sim_cfg) == "robosuite":
        from sof_ros.sim.robosuite_env import instruction_for as robosuite_instruction

        return robosuite_instruction(task)
    if backend_of(sim_cfg) == "libero":
        from sof_ros.sim.libero_env import instruction_for as libero_instruction

        return libero_instruction(task, getattr(sim_cfg, "suite", ""))
    from sof_ros.sim.metaworld_env import instruction_for as mw_instruction

    return mw_instruction(task)


def embodiment(sim_cfg) -> str:
    """The arm a checkpoint trained in this simulator drives: sawyer | panda (robosuite: `sim.robot`)."""
    backend = backend_of(sim_cfg)
    if backend == "robosuite":
        from sof_ros.sim.robosuite_env import robot_name

        return robot_name(sim_cfg)
    return EMBODIMENT[backend]


def embodiment_record(sim_cfg) -> dict:
    """What a checkpoint's Stage 3 is tied to (written to CHECKPOINT/embodiment.json by sof-train):
    the arm, the camera and image size, and the frame and scale of the [dx, dy, dz, grip] action."""
    backend = backend_of(sim_cfg)
    arm = embodiment(sim_cfg)
    frames = {"sawyer": "base" if backend == "robosuite" else "world (MetaWorld)", "panda": "panda_link0"}
    return {"arm": arm, "simulator": backend, "camera": str(sim_cfg.camera),
            "image_size": [int(sim_cfg.width), int(sim_cfg.height)],
            "action": "[dx, dy, dz, grip] per control step, 0.01 m per unit, gripper -1 open .. 1 closed",
            "action_frame": frames.get(arm, "robot base")}
