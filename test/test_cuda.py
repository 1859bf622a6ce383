"""Training and planning on CUDA (skipped where torch sees no GPU; CI has none, a GPU workstation runs it).

What a lab does: train on a GPU box, run the checkpoint on the robot's CPU. So every stage trains on
CUDA from one small synthetic dataset, and each learned row then plans and acts from the same frame
on CUDA and on the CPU with the same weights: the same tokens, and flow plans and actions within float
tolerance. The comparison runs with TF32 off (PyTorch lets cuDNN use it for convolutions by
default): its 10-bit mantissa can flip the argmax of two nearly tied tokens on one GPU and not on
another, which is not a fault of the code.
"""
import zlib

import numpy as np
import pytest
import torch

from synthetic_episodes import sliding_frames, write_episode

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

TASKS = (("slide right", (1, 0)), ("slide down", (0, 1)))


class _HashEncoder:
    """A stand-in sentence encoder: the test is about devices, not language (and the offline model
    may not be installed on a GPU box that only trains)."""

    def encode(self, sentences, normalize_embeddings=True):
        out = []
        for s in sentences:
            v = np.random.default_rng(zlib.crc32(s.encode())).normal(size=384).astype(np.float32)
            out.append(v / np.linalg.norm(v))
        return np.stack(out)


@pytest.fixture
def cuda_checkpoint(tmp_path, monkeypatch):
    from sof_ros import text
    from sof_ros.config import load_config
    from sof_ros.data.dataset import Dataset
    from sof_ros.train import STAGES, train

    monkeypatch.setattr(text, "_MODEL", _HashEncoder())
    ds = Dataset.create(tmp_path / "ds")
    for i in range(8):
        instruction, step = TASKS[i % 2]
        write_episode(ds, i, t=24, actions=i < 4, instruction=instruction, task=instruction.replace(" ", "-"),
                      step=step)
    cfg = load_config("config/tiny.yaml")
    cfg.train.dataset, cfg.train.out = str(ds.root), str(tmp_path / "ckpt")
    for k in ("skill_steps", "policy_steps", "f2a_steps", "baseline_steps"):
        setattr(cfg.train, k, 30)
    cfg.train.log_every, cfg.train.ckpt_every = 10, 30
    cfg.f2a.d_act_episodes_per_task_camera = 2
    trainer = train(cfg, STAGES, device="cuda", progress=False)
    return cfg, trainer, ds


def test_every_stage_trains_on_cuda_and_its_checkpoint_plans_alike_on_cpu(cuda_checkpoint, monkeypatch):
    from sof_ros.policies import load_policy
    from sof_ros.policies.base import AgentInput

    cfg, trainer, _ = cuda_checkpoint
    assert set(trainer.histories) >= {"skill", "policy", "f2a", "f2a_plan_only", "skill2action", "bc",
                                      "pixel_skill", "pixel_policy", "pixel2action"}
    for name, hist in trainer.histories.items():
        assert all(np.isfinite(r["loss"]) for r in hist), name
    assert next(trainer.models["skill"].parameters()).is_cuda
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    obs = AgentInput(rgb=sliding_frames(1, seed=99)[0], ee_pos=np.array([0.05, 0.05, 0.05]), gripper=0.0)
    for row in ("sof", "sof_plan_only", "skill2action", "bc", "pixel_skills"):
        plans, actions = {}, {}
        for device in ("cpu", "cuda"):
            policy = load_policy(row, cfg.train.out, device=device)
            policy.reset()
            plans[device] = policy.plan(obs, TASKS[0][0])
            actions[device] = policy.act(plans[device], obs, 0)
        assert np.array_equal(plans["cpu"].tokens, plans["cuda"].tokens), row
        flow_scale = float(np.abs(plans["cpu"].flow).max()) if np.size(plans["cpu"].flow) else 0.0
        np.testing.assert_allclose(plans["cuda"].flow, plans["cpu"].flow, atol=1e-2 * flow_scale + 1e-3, err_msg=row)
        np.testing.assert_allclose(actions["cuda"], actions["cpu"], atol=1e-2, err_msg=row)
        assert actions["cuda"].shape == (4,) and np.all(np.abs(actions["cuda"]) <= 1), row
