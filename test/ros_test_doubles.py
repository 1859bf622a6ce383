"""Test double for the Policy interface (sof_ros/policies), used by the ROS node tests only: the
nodes' plumbing is tested without a checkpoint, with the real AgentInput / FlowPlan types."""
from __future__ import annotations

import numpy as np

from sof_ros.policies import AgentInput, FlowPlan


class FakeAgent:
    """Plans a uniform rightward flow; acts with a constant action (or NaN / an exception)."""

    replan_every = 4
    horizon = 8
    flow_res = 16

    def __init__(self, action=(0.5, 0.0, 0.0, -1.0)):
        self.action = np.asarray(action, dtype=np.float64)
        self.mode = "move"  # move | nan | raise
        self.plans: list[tuple[AgentInput, str]] = []
        self.acts: list[int] = []

    name = "fake"

    @classmethod
    def load(cls, checkpoint=None, device="cpu", replan_every=None, task=None, eval_cfg=None, solver=None):
        return cls()

    def reset(self) -> None:
        pass

    def plan(self, obs: AgentInput, instruction: str) -> FlowPlan:
        assert obs.rgb.ndim == 3 and obs.rgb.dtype == np.uint8
        self.plans.append((obs, instruction))
        h, w = obs.rgb.shape[:2]
        flow = np.zeros((self.horizon, self.flow_res, self.flow_res, 2), np.float32)
        flow[..., 0] = 1.5
        return FlowPlan(tokens=np.arange(4, dtype=np.int64) + len(self.plans), flow=flow, image_size=(w, h))

    def act(self, plan: FlowPlan, obs: AgentInput, step_in_plan: int) -> np.ndarray:
        self.acts.append(step_in_plan)
        if self.mode == "raise":
            raise RuntimeError("fake failure")
        if self.mode == "nan":
            return np.array([np.nan, 0.0, 0.0, 0.0])
        return self.action.copy()
