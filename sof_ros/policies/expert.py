"""The scripted expert as a row (MetaWorld's policies, or sof_ros's LIBERO programs): the upper
bound, reading privileged simulator state."""
from __future__ import annotations

import numpy as np

from sof_ros.errors import SofError
from sof_ros.policies.base import AgentInput, FlowPlan


class ExpertPolicy:
    name = "expert"
    replan_every = 1

    def __init__(self, task: str):
        from sof_ros.sim.libero_experts import PROGRAMS, expert_for
        from sof_ros.sim.metaworld_env import expert_policy
        from sof_ros.sim.robosuite_env import TASKS as ROBOSUITE_TASKS, expert_for as robosuite_expert

        self.task = task
        self._expert = (expert_for(task) if task in PROGRAMS else robosuite_expert(task) if task in ROBOSUITE_TASKS
                        else expert_policy(task))  # task names are disjoint

    @classmethod
    def load(cls, checkpoint=None, device: str = "cpu", replan_every: int | None = None, task: str | None = None,
             eval_cfg=None, solver=None):
        if not task:
            raise SofError("the scripted expert row needs the simulator task it runs on")
        return cls(task)

    def reset(self) -> None:
        """MetaWorld's experts are stateless; a LIBERO program starts again from its first primitive."""
        if hasattr(self._expert, "reset"):
            self._expert.reset()

    def plan(self, obs: AgentInput, instruction: str) -> FlowPlan:
        if obs.sim_state is None:
            raise SofError("the scripted expert reads privileged simulator state; it runs only in simulation")
        action = np.asarray(self._expert.get_action(obs.sim_state), dtype=np.float64)
        h, w = np.shape(obs.rgb)[:2]
        return FlowPlan(np.zeros(0, np.int64), np.zeros((0, 1, 1, 2), np.float32), (w, h), action[None])

    def act(self, plan: FlowPlan, obs: AgentInput, step_in_plan: int) -> np.ndarray:
        return np.clip(plan.actions[0], -1.0, 1.0)
