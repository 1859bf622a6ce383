"""Simulated arms rendering RGB, depth, segmentation and camera models headlessly: MetaWorld (Sawyer,
`metaworld_env`) and LIBERO (Franka Panda, `libero_env`), chosen by `SimConfig.backend`.

Everything outside this package builds arms and experts through `make_arm` / `make_expert`, so a
config with `sim.backend: libero` runs the same collection, evaluation and ROS bridge code."""
from __future__ import annotations

BACKENDS = ("metaworld", "libero")
# The arm each simulator's checkpoints are trained for (sof_ros.ros.params robot profiles map onto these).
EMBODIMENT = {"metaworld": "sawyer", "libero": "panda"}


def backend_of(sim_cfg) -> str:
    from sof_ros.errors import SofError

    backend = getattr(sim_cfg, "backend", "metaworld") or "metaworld"
    if backend not in BACKENDS:
        raise SofError(f"unknown sim.backend '{backend}'; choose one of: {', '.join(BACKENDS)}")
    return backend


def make_arm(task: str, sim_cfg, camera: str | None = None, with_depth: bool = True):
    """The simulated arm for `task` (MetaWorldArm or LiberoArm, same interface)."""
    if backend_of(sim_cfg) == "libero":
        from sof_ros.sim.libero_env import LiberoArm

        return LiberoArm(task, sim_cfg, camera=camera, with_depth=with_depth)
    from sof_ros.sim.metaworld_env import MetaWorldArm

    arm = MetaWorldArm(task, sim_cfg, camera=camera)
    arm.with_depth = with_depth
    return arm


def make_expert(task: str, sim_cfg):
    """The scripted expert for `task`: `reset()` (when it has one) and `get_action(obs.state)`."""
    if backend_of(sim_cfg) == "libero":
        from sof_ros.sim.libero_experts import expert_for

        return expert_for(task)
    from sof_ros.sim.metaworld_env import expert_policy

    return expert_policy(task)


def instruction_for(task: str, sim_cfg) -> str:
    if backend_of(sim_cfg) == "libero":
        from sof_ros.sim.libero_env import instruction_for as libero_instruction

        return libero_instruction(task, getattr(sim_cfg, "suite", ""))
    from sof_ros.sim.metaworld_env import instruction_for as mw_instruction

    return mw_instruction(task)


def embodiment(sim_cfg) -> str:
    """The arm a checkpoint trained in this simulator drives: sawyer | panda."""
    return EMBODIMENT[backend_of(sim_cfg)]
