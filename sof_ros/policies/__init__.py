"""Policies: one class per row behind one interface (`Policy`: reset / plan / act) and one
registry (`ROWS`) shared by sof-train, sof-eval, the demo and the ROS nodes."""
from sof_ros.policies.base import ROWS, AgentInput, FlowPlan, Policy, RowSpec, load_policy, row_spec, stages_for

__all__ = ["ROWS", "AgentInput", "FlowPlan", "Policy", "RowSpec", "load_policy", "row_spec", "stages_for"]
