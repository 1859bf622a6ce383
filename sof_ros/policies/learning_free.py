"""The learning-free rows: SOF's predicted flow plans (Stages 1-2 of a checkpoint) or the oracle's
ground-truth plans, turned into actions by the geometric solver (`sof_ros.flow2action.geometric`),
which needs no action labels.

Inputs at act time: depth, camera intrinsics and pose, the end-effector position and an object
mask -- in simulation the segmentation of the task's objects (`sim.metaworld_env.TASK_OBJECTS`, as
AVDC), on a robot whatever mask source fills `AgentInput.object_mask`; without one the solver uses
the plan's moving pixels that are not the arm (`geometric.motion_mask`).
"""
from __future__ import annotations

import numpy as np
import torch

from sof_ros.errors import SofError
from sof_ros.flow2action.geometric import GeometricFlow2Action
from sof_ros.policies.base import AgentInput, FlowPlan
from sof_ros.policies.sof import _FlowSkillPolicy

def _need_geometry(obs: AgentInput) -> None:
    if obs.depth is None or obs.intrinsics is None or obs.cam_pose is None or obs.ee_pos is None:
        raise SofError("the learning-free Flow2Action needs depth, camera intrinsics, camera pose and "
                       "the end-effector position; use a depth camera or the 'sof' row")


class _SolverMixin:
    solver: GeometricFlow2Action
    reads_solver = True  # load_policy passes solver settings (sof-eval --solver) to these rows only
    _plans = 0

    def reset(self) -> None:
        self.solver.reset()

    @property
    def last_reason(self) -> str:
        return self.solver.last_reason

    @property
    def pose_target(self) -> np.ndarray | None:
        """The 3-D subgoal behind the last action (world/base frame), for a pose command; None when
        the last action was a safe zero."""
        return getattr(self.solver, "current_target", None)

    def act(self, plan: FlowPlan, obs: AgentInput, step_in_plan: int) -> np.ndarray:
        _need_geometry(obs)
        flow = plan.flow
        undefined = getattr(plan, "undefined", None)  # oracle plans: cells without ground truth
        if undefined is not None:
            flow = np.where(undefined[..., None], np.nan, flow)
        return self.solver.act(flow, obs.depth, obs.intrinsics, obs.cam_pose, obs.ee_pos, step_in_plan,
                               object_mask=obs.object_mask, robot_mask=obs.robot_mask,
                               frames_per_step=int(plan.frames_per_step), plan_id=id(plan))


class SofLearningFreePolicy(_SolverMixin, _FlowSkillPolicy):
    """SOF with the geometric solver on the checkpoint's predicted plans (greedy; after a stall, or
    `idle_steps` control steps of a still hand with nothing left to do, the next plan is sampled at
    `replan_temperature`, a fresh plan instead of the same one again)."""

    name = "sof_learning_free"
    needs_proprio = False
    replan_temperature = 1.0
    # A predicted plan showing a still object from a still frame held the arm for the rest of the
    # episode. Backing off and sampling after 24 idle steps: 0.39 [0.32, 0.46] against 0.33 on the
    # MetaWorld protocol (tied by the interval rule; paired, 9 episodes gained and none lost, p = 0.004;
    # docs/learning_free.md#idle). The oracle row keeps the solver's default (0, off): with 24 it was
    # 0.78 against 0.79 (1 gained, 4 lost, tied).
    idle_steps = 24
    # A push whose hand a predicted plan carried off the object, then plans showing it still, held the
    # hand there; beyond 15 cm of the object (a push starts push_back_m = 8 cm behind its rear face,
    # plus contact_m = 5 cm) the hand approaches the object again (docs/learning_free.md#lost-contact).
    lost_contact_m = 0.15
    # ... and a hand at the object whose plans show it still (a door held at the push start for 450
    # steps) pushes on 5 cm per plan along the kept direction. Dev seeds 500-501 (66 episodes), both
    # against neither: 29 against 23 solved, 6 gained and none lost (lost_contact alone: 1 gained).
    push_on_m = 0.05
    _fresh_requested = False

    def __init__(self, *args, solver: dict | None = None, **kwargs):
        """`solver`: settings of the geometric solver over this row's own (sof-eval --solver)."""
        super().__init__(*args, **kwargs)
        scale = float(self.cfg.eval.plan_flow_scale)
        if not (np.isfinite(scale) and scale > 0):
            raise SofError(f"the checkpoint's eval.plan_flow_scale must be a positive number, got {scale}; "
                           "fix its config.yaml (1.0: the plans as decoded)")
        samples, temp = self.cfg.eval.plan_samples, self.cfg.eval.plan_sample_temperature
        if not (isinstance(samples, int) and samples >= 1):
            raise SofError(f"eval.plan_samples must be a whole number >= 1, got {samples!r} (1: the greedy plan)")
        if samples > 1 and not (np.isfinite(temp) and temp > 0):
            raise SofError(f"eval.plan_sample_temperature must be a positive number with plan_samples > 1, got {temp}")
        self.solver = GeometricFlow2Action(**{"flow_scale": scale, "idle_steps": self.idle_steps,
                                                 "lost_contact_m": self.lost_contact_m, "push_on_m": self.push_on_m,
                                                 **(solver or {})})

    def reset(self) -> None:
        """The solver's state and the sampling stream of re-plans after a stall: an episode replays exactly."""
        _SolverMixin.reset(self)
        _FlowSkillPolicy.reset(self)
        self._fresh_requested = False

    @property
    def wants_fresh_plan(self) -> bool:
        """The solver stalled on the current plan: the next plan should be a fresh sample. In the ROS
        graph the solver acts in Flow2Action and the planner plans in the policy node, so Flow2Action
        sends this on its fresh-plan topic and the policy node calls `request_fresh_plan`."""
        return bool(self.solver.needs_replan)

    def request_fresh_plan(self) -> None:
        """Sample the next plan (at `replan_temperature`) as after a stall of this process's own solver."""
        self._fresh_requested = True

    @torch.no_grad()
    def plan(self, obs: AgentInput, instruction: str) -> FlowPlan:
        img, text, size = self._inputs(obs, instruction)
        fresh, self._fresh_requested = self.solver.needs_replan or self._fresh_requested, False
        proprio = self._policy_proprio(obs)
        samples = 1 if fresh else int(self.cfg.eval.plan_samples)
        tokens = self.models["policy"].generate(img, text, proprio, temperature=self.replan_temperature if fresh else 0.0,
                                                generator=self._gen)
        if samples > 1:  # the greedy plan and samples - 1 sampled ones, decoded in one batch
            n = samples - 1
            more = self.models["policy"].generate(img.expand(n, *img.shape[1:]), text.expand(n, *text.shape[1:]),
                                                  None if proprio is None else proprio.expand(n, *proprio.shape[1:]),
                                                  temperature=float(self.cfg.eval.plan_sample_temperature),
                                                  generator=self._gen)
            tokens = torch.cat([tokens, more])
        flow = self.models["skill"].decode_ids(tokens, img.expand(len(tokens), *img.shape[1:]))
        pick = plan_medoid(flow)
        return self._plan(tokens[pick:pick + 1], flow[pick:pick + 1], size)  # frames_per_step = skill.stride


def plan_medoid(flows: torch.Tensor) -> int:
    """Index of the plan (flows: K plans, any shape after the first axis) with the least summed
    distance to the others: a plan the samples agree on, which is still one decodable token sequence
    (a per-pixel mean or median would not be). Ties go to the lower index, the greedy plan first."""
    x = flows.reshape(len(flows), -1).double()
    return int(torch.cdist(x, x).sum(1).argmin()) if len(x) > 1 else 0


# Control steps between two oracle plans: two of the plan's fields. Re-planning every 8 steps (less
# than one 12-step field) executed only each plan's first field, in which the expert first moves the
# hand it holds sideways and down before lifting (traced: basketball/corner3), so a held object crept
# to the workspace's edge; every 24 steps: oracle 0.79 against 0.68 on the protocol (docs/learning_free.md).
ORACLE_REPLAN_EVERY = 24


class SofLearningFreeOraclePolicy(_SolverMixin):
    """The same solver on ground-truth flow of the scripted expert's future from the current state
    (simulation only: `AgentInput.oracle` is the MetaWorldArm). Plan format: `fields` flow fields
    `frames_per_step` control steps apart at `flow_res` (default: the render resolution), re-planned
    every `replan_every` control steps."""

    name = "sof_learning_free_oracle"

    def __init__(self, fields: int = 8, frames_per_step: int = 12, flow_res: int | None = None,
                 replan_every: int = ORACLE_REPLAN_EVERY, solver: dict | None = None):
        self.fields, self.frames_per_step, self.flow_res = int(fields), int(frames_per_step), flow_res
        self.replan_every = int(replan_every)
        self.solver = GeometricFlow2Action(**(solver or {}))

    @classmethod
    def load(cls, checkpoint=None, device: str = "cpu", replan_every: int | None = None, task: str | None = None,
             eval_cfg=None, solver: dict | None = None):
        return cls(replan_every=replan_every or ORACLE_REPLAN_EVERY, solver=solver)

    def plan(self, obs: AgentInput, instruction: str) -> FlowPlan:
        from sof_ros.flow2action.oracle import expert_flow_plan

        arm = obs.oracle
        if arm is None or not hasattr(arm, "expert_future"):
            raise SofError("the oracle row needs privileged simulator access (AgentInput.oracle); it runs only in simulation")
        if obs.depth is None or obs.seg is None:
            raise SofError("the oracle row needs the rendered depth and segmentation of the current frame")
        h, w = np.shape(obs.rgb)[:2]
        flow = expert_flow_plan(arm, obs.depth, obs.seg, self.fields, self.frames_per_step, self.flow_res or (h, w))
        undefined = ~np.all(np.isfinite(flow), axis=-1)
        plan = FlowPlan(np.zeros(0, np.int64), np.where(undefined[..., None], 0.0, flow).astype(np.float32), (w, h),
                        frames_per_step=self.frames_per_step)
        plan.undefined = undefined  # finite flow for every plan consumer; the solver drops these cells' tracks
        return plan
