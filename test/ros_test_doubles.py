"""Test double for the SofAgent interface (sof_ros/agent.py), used by the ROS node tests only.

It mirrors AgentInput / FlowPlan from the lead's API so the nodes' plumbing can be tested without a
checkpoint. Nodes take the dataclasses from the module that defines the agent's class, so this
module's AgentInput / FlowPlan are the ones used with FakeAgent.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class AgentInput:
    rgb: np.ndarray
    depth: np.ndarray | None = None
    seg: np.ndarray | None = None
    intrinsics: np.ndarray | None = None
    cam_pose: np.ndarray | None = None
    ee_pos: np.ndarray | None = None


@dataclass
class FlowPlan:
    tokens: np.ndarray
    flow: np.ndarray
    image_size: tuple[int, int]


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

    @classmethod
    def load(cls, path, device="cpu", flow2action="learned"):
        return cls()

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
