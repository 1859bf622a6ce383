"""The one policy interface every row implements, and the registry that names the rows.

A *row* is a way of turning a camera frame and an instruction into end-effector actions: SOF with
its learned Flow2Action head, SOF with the learning-free solver, the comparisons (Skill2Action,
behaviour cloning, pixel-space skills) and the scripted expert. The same row name is used by
`sof-train --rows`, `sof-eval --rows`, the ROS nodes (`agent.policy`) and the result files.

This module is NumPy-only so the ROS nodes and their tests can use the types without torch.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from sof_ros.errors import SofError


@dataclass
class AgentInput:
    """What a policy may know at one control step (a node, the simulator and a real arm fill the same)."""

    rgb: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray | None = None  # (H, W) float32 metres
    seg: np.ndarray | None = None  # (H, W) int segmentation ids (simulation; a mask source on a robot)
    intrinsics: np.ndarray | None = None  # 3x3
    cam_pose: np.ndarray | None = None  # 4x4 camera-to-world, OpenCV axes
    ee_pos: np.ndarray | None = None  # (3,) metres, world/base frame
    gripper: float = 0.0  # finger opening as the training data recorded it
    sim_state: np.ndarray | None = None  # privileged simulator state: only the scripted expert reads it
    object_mask: np.ndarray | None = None  # (H, W) bool: the instruction's objects (sim: segmentation ids; robot: a mask source)
    robot_mask: np.ndarray | None = None  # (H, W) bool: the arm's hand (sim: segmentation; robot: its rendered model)
    oracle: object = None  # privileged simulator access (the expert's future): only the oracle rows read it


@dataclass
class FlowPlan:
    """One plan: made from one frame, used for the next `steps` control steps."""

    tokens: np.ndarray  # (n_tokens,) int64 skill-token ids (empty for rows without skills)
    flow: np.ndarray  # (T_flow, h, w, 2) float32 per-step flow in working-resolution pixels (T_flow may be 0)
    image_size: tuple[int, int]  # (W, H) of the frame the plan was made from
    actions: np.ndarray | None = field(default=None, repr=False)  # (T, 4) when the row predicts a chunk
    frames: np.ndarray | None = field(default=None, repr=False)  # (T, h, w, 3) uint8, pixel-space skills only
    frames_per_step: int = 1  # control steps (camera frames) between two flow fields of the plan

    @property
    def steps(self) -> int:
        """Control steps this plan covers: its action chunk if it has one, else its flow."""
        if self.actions is not None:
            return len(self.actions)
        return int(np.shape(self.flow)[0]) * int(self.frames_per_step)


@runtime_checkable
class Policy(Protocol):
    """reset at an episode / instruction start; plan every `replan_every` steps; act every step."""

    name: str
    replan_every: int

    def reset(self) -> None: ...

    def plan(self, obs: AgentInput, instruction: str) -> FlowPlan: ...

    def act(self, plan: FlowPlan, obs: AgentInput, step_in_plan: int) -> np.ndarray: ...


@dataclass(frozen=True)
class RowSpec:
    """A registered row: its label in tables, the class that implements it (imported on use) and
    the trained stages (`<stage>.pt` in a checkpoint) it needs."""

    name: str
    label: str
    target: str  # "module:Class"
    stages: tuple[str, ...] = ()
    needs_depth: bool = False  # depth + camera model + end-effector position at act time

    def cls(self):
        mod, _, name = self.target.partition(":")
        return getattr(importlib.import_module(mod), name)


ROWS: dict[str, RowSpec] = {spec.name: spec for spec in (
    RowSpec("sof", "SOF, learned Flow2Action (ours)", "sof_ros.policies.sof:SofPolicy", ("skill", "policy", "f2a")),
    RowSpec("sof_plan_only", "SOF, Flow2Action on the plan alone, no frame (ours)",
            "sof_ros.policies.sof:SofPlanOnlyPolicy", ("skill", "policy", "f2a_plan_only")),
    RowSpec("sof_learning_free", "SOF, learning-free Flow2Action (ours)",
            "sof_ros.policies.learning_free:SofLearningFreePolicy", ("skill", "policy"), needs_depth=True),
    RowSpec("sof_learning_free_oracle", "Learning-free Flow2Action on ground-truth expert flow (oracle plans)",
            "sof_ros.policies.learning_free:SofLearningFreeOraclePolicy", (), needs_depth=True),
    RowSpec("skill2action", "Skill2Action ablation (ours)", "sof_ros.policies.sof:Skill2ActionPolicy",
            ("skill", "policy", "skill2action")),
    RowSpec("bc", "Behaviour cloning baseline (ours)", "sof_ros.policies.sof:BCPolicy", ("bc",)),
    RowSpec("pixel_skills", "Pixel-space skills ablation (ours)", "sof_ros.policies.sof:PixelSkillsPolicy",
            ("pixel_skill", "pixel_policy", "pixel2action")),
    RowSpec("expert", "Scripted expert, privileged state (upper bound)", "sof_ros.policies.expert:ExpertPolicy"),
)}


def row_spec(name: str) -> RowSpec:
    if name not in ROWS:
        raise SofError(f"unknown policy row '{name}'; choose one of: {', '.join(ROWS)}")
    return ROWS[name]


def stages_for(rows) -> tuple[str, ...]:
    """The training stages the given rows need, in training order (earlier stages feed later ones)."""
    from sof_ros.train import STAGES

    needed = {s for r in rows for s in row_spec(r).stages}
    return tuple(s for s in STAGES if s in needed)


def load_policy(name: str, checkpoint: str | None = None, device: str = "cpu", replan_every: int | None = None,
                task: str | None = None, eval_cfg=None, solver: dict | None = None) -> Policy:
    """The policy for row `name` (or a "module:Class" with the same `load` signature, e.g. a test
    double), loaded from `checkpoint`. `task` is only read by the scripted expert. `replan_every`
    None keeps the row's own interval; 0 or less is refused (it used to mean the default silently).
    `eval_cfg` (an `EvalConfig`) replaces the checkpoint's own `eval` section for the rows that read
    one (temporal ensembling, plan sampling, plan flow scale): an evaluation's protocol is the policy's;
    rows without a checkpoint config (expert, oracle) read none. `solver`: settings of the geometric
    solver over the row's own (sof-eval --solver), for the rows that run one (`reads_solver`)."""
    if replan_every is not None and int(replan_every) < 1:
        raise SofError(f"replan_every must be a positive number of control steps, got {replan_every}; "
                       "leave it out for the row's own interval")
    if ":" in name:
        mod, _, cls_name = name.partition(":")
        try:
            cls = getattr(importlib.import_module(mod), cls_name)
        except (ImportError, AttributeError) as exc:
            raise SofError(f"cannot import policy class '{name}': {exc}") from None
    else:
        cls = row_spec(name).cls()
    solver = dict(solver or {})
    if solver and not getattr(cls, "reads_solver", False):
        raise SofError(f"row '{name}' runs no geometric solver; solver settings (sof-eval --solver) are for "
                       "the learning-free rows")
    return cls.load(checkpoint, device=device, replan_every=replan_every, task=task, eval_cfg=eval_cfg, solver=solver)
