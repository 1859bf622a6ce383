"""The SOF learner end to end on a tiny config: collect -> flow -> 3 stages -> closed-loop eval.

Sanity experiments of the method: Stage 1 overfits a tiny flow set, Flow2Action overfits one
trajectory (and replays it to success in closed loop), token timelines are produced.
"""
import json

import numpy as np
import pytest
import torch

from sof_ros.config import SimConfig, load_config
from sof_ros.data.collect import collect
from sof_ros.errors import SofError

TASK = "handle-press"  # the scripted expert solves seed 0 in 41 steps, inside the 60-step tiny budget


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    from sof_ros.flow.extract import extract_dataset

    root = tmp_path_factory.mktemp("learner") / "ds"
    sim = SimConfig(width=64, height=64, max_steps=60)
    # noise-free expert on seed 0: the overfit case replays this exact trajectory
    collect(str(root), [TASK], episodes_per_task=2, seed=0, sim=sim, act_fraction=1.0, noise=0.0, progress=False)
    collect(str(root), ["door-open"], episodes_per_task=1, seed=0, sim=sim, act_fraction=0.0, noise=0.0,
            progress=False)
    extract_dataset(str(root), "dis", workers=1, progress=False)
    return root


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    from sof_ros.train import train

    cfg = load_config("config/tiny.yaml")
    cfg.sim = SimConfig(width=64, height=64, max_steps=60)
    cfg.train.dataset = str(tiny_dataset)
    cfg.train.out = str(tmp_path_factory.mktemp("run") / "ckpt")
    trainer = train(cfg, progress=False)
    return cfg, trainer


def _first_last(history, key="loss"):
    return history[0][key], history[-1][key]


def test_training_lowers_every_loss(trained):
    _, trainer = trained
    for stage in ("skill", "policy", "f2a", "skill2action", "bc"):
        first, last = _first_last(trainer.histories[stage])
        assert last < first, f"{stage}: loss did not fall ({first:.4f} -> {last:.4f})"


def test_stage1_overfits_tiny_flow_set(trained):
    """Seed sanity experiment: the autoencoder alone, trained on the 4 most-moving segments of the tiny
    set, reconstructs their motion far better than predicting no motion."""
    import torch.nn.functional as F

    from sof_ros.skills.model import SkillAutoencoder, epe

    cfg, trainer = trained
    d = trainer.data
    starts = torch.from_numpy(d.starts("train"))
    flow_all = d.segment(starts, d.flow)
    moving_px = (flow_all.norm(dim=-1) > 0.25).flatten(1).sum(1)
    pick = torch.argsort(moving_px, descending=True)[:4]
    flow, img = flow_all[pick], d.rgb[starts][pick]
    torch.manual_seed(0)
    model = SkillAutoencoder(cfg.skill)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    for _ in range(500):
        rec, _ = model(flow, img)
        loss = F.smooth_l1_loss(rec, flow)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        rec, ids = model(flow, img)
    moving = flow.norm(dim=-1) > 0.25
    assert moving.sum() > 10, "the tiny set has almost no motion: the fixture is broken"
    err = (rec - flow).norm(dim=-1)[moving].mean()
    zero = flow.norm(dim=-1)[moving].mean()
    assert err < 0.6 * zero, f"reconstruction EPE on moving px {err:.3f} not well below zero-flow EPE {zero:.3f}"
    assert float(epe(rec, flow)) < float(flow.norm(dim=-1).mean()), "worse than zero flow over all pixels"


def test_reports_written(trained):
    cfg, _ = trained
    out = __import__("pathlib").Path(cfg.train.out)
    for png in ("skill_reconstructions.png", "skill_token_usage.png", "skill_token_timelines.png",
                "policy_flow_plans.png", "loss_curves.png"):
        assert (out / "plots" / png).stat().st_size > 1000, png
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 < metrics["skill"]["train_codes_used"] <= metrics["skill"]["codebook_size"]
    for name in ("skill.pt", "policy.pt", "f2a.pt", "config.yaml", "instructions.pt"):
        assert (out / name).is_file(), name
    state = torch.load(out / "f2a.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state.values())


def test_overfit_flow2action_succeeds_in_closed_loop(trained):
    """Trained on the noise-free seed-0 demo, the full agent (tokens -> flow plan -> actions) presses the button."""
    from sof_ros.eval import evaluate

    cfg, _ = trained
    res = evaluate(cfg.train.out, ["sof"], [TASK], episodes=1, first_seed=0, max_steps=60, sim=cfg.sim,
                   replan_every=cfg.eval.replan_every, progress=False)
    assert res["rows"]["sof"]["per_task"][TASK] == 1.0, res


def test_agent_rejects_bad_inputs(trained):
    from sof_ros.agent import AgentInput, SofAgent

    cfg, _ = trained
    agent = SofAgent.load(cfg.train.out)
    frame = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(SofError, match="uint8"):
        agent.plan(AgentInput(rgb=frame.astype(np.float32), ee_pos=np.zeros(3)), "press the button")
    with pytest.raises(SofError, match="empty"):
        agent.plan(AgentInput(rgb=frame, ee_pos=np.zeros(3)), "   ")
    with pytest.raises(SofError, match="ee_pos"):
        agent.plan(AgentInput(rgb=frame, ee_pos=np.array([np.nan, 0, 0])), "press the button")
    with pytest.raises(SofError, match="config.yaml"):
        SofAgent.load(cfg.train.out + "/nope")


def test_ddp_two_cpu_processes_gloo(tiny_dataset, tmp_path):
    """torchrun with 2 CPU ranks (gloo): trains stage 1, rank 0 alone writes the weights."""
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    cfg = yaml.safe_load(open("config/tiny.yaml"))
    cfg["train"].update(skill_steps=20, log_every=10, ckpt_every=20, num_threads=1)
    cfg_path = tmp_path / "ddp.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "ddp_out"
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "sof_ros.train",
                           "--config", str(cfg_path), "--stage", "skill", "--dataset", str(tiny_dataset),
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "skill.pt").is_file()
    hist = json.loads((out / "skill_history.json").read_text())
    assert hist[-1]["step"] == 20
