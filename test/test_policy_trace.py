"""SofPolicy.warm_up (what the ROS policy node calls at start-up): the traced plan networks and their
ONNX Runtime export give the same plans as the eager ones -- same tokens, same flow plan, same
action chunk -- and a runtime that cannot is not used."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

CHECKPOINT = Path(__file__).resolve().parents[1] / "models" / "sof_metaworld"


@pytest.mark.skipif(not (CHECKPOINT / "f2a.pt").is_file(), reason=f"shipped checkpoint {CHECKPOINT} is missing")
@pytest.mark.parametrize("runtime", ["torchscript", "onnxruntime"])
def test_sof_plans_of_each_runtime_equal_eager_plans(runtime):
    from sof_ros.policies import AgentInput, load_policy

    eager, traced = load_policy("sof", str(CHECKPOINT)), load_policy("sof", str(CHECKPOINT))
    assert traced.warm_up(runtime=runtime) == runtime == traced.runtime, traced.runtime_note
    assert eager.runtime == "eager" and not isinstance(eager._graph, torch.jit.ScriptModule)
    if runtime == "torchscript":
        assert isinstance(traced._graph, torch.jit.ScriptModule)
    instructions = sorted(eager.text.cache)[:4]
    rng = np.random.default_rng(0)
    tokens = set()
    for k in range(8):
        size = [(128, 128), (64, 48), (320, 240)][k % 3]  # any frame size: both resize to the policy's input
        obs = AgentInput(rgb=rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8),
                         ee_pos=np.array([0.0, 0.6, 0.2]) + rng.normal(0, 0.05, 3), gripper=float(rng.uniform()))
        a, b = eager.plan(obs, instructions[k % 4]), traced.plan(obs, instructions[k % 4])
        np.testing.assert_array_equal(a.tokens, b.tokens)
        # float32 rounding of another kernel library, which depends on the CPU: ONNX Runtime's actions
        # were 1.06e-5 off eager on an Intel Xeon and within 1e-5 on an AMD EPYC; 1e-4 of an action is
        # 1 micrometre of end-effector motion, and a wrong trace is off by orders of magnitude more
        np.testing.assert_allclose(a.flow, b.flow, atol=1e-4)
        np.testing.assert_allclose(a.actions, b.actions, atol=1e-4)
        assert a.image_size == b.image_size == size
        tokens.add(tuple(a.tokens))
    assert len(tokens) > 1  # the trace did not freeze one input's tokens into a constant


@pytest.mark.skipif(not (CHECKPOINT / "f2a.pt").is_file(), reason=f"shipped checkpoint {CHECKPOINT} is missing")
def test_a_runtime_that_is_missing_or_plans_differently_is_replaced_by_the_trace(monkeypatch):
    import sys

    from sof_ros.policies import load_policy
    from sof_ros.policies import sof as sof_module

    policy = load_policy("sof", str(CHECKPOINT))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # not installed
    assert policy.warm_up(runtime="onnxruntime") == "torchscript"
    assert "onnxruntime not used" in policy.runtime_note and "ModuleNotFoundError" in policy.runtime_note
    monkeypatch.delitem(sys.modules, "onnxruntime")

    class OffByOneToken(sof_module._OnnxPlanGraph):
        def __call__(self, *args):
            tokens, flow, actions = super().__call__(*args)
            return (tokens + 1) % 2, flow, actions

    monkeypatch.setattr(sof_module, "_OnnxPlanGraph", OffByOneToken)
    policy = load_policy("sof", str(CHECKPOINT))
    assert policy.warm_up(runtime="onnxruntime") == "torchscript"
    assert "check input 0: tokens" in policy.runtime_note
    with pytest.raises(sof_module.SofError, match="runtime must be one of"):
        policy.warm_up(runtime="tensorrt")

    sampled = load_policy("sof", str(CHECKPOINT))
    sampled.cfg.policy.temperature = 1.0
    sampled._graph.temperature = 1.0
    assert sampled.warm_up(runtime="onnxruntime") == "eager" and "sampled decoding" in sampled.runtime_note
    assert sampled._graph.temperature == 1.0  # still sampling, not a greedy graph
