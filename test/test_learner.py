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
    extract_dataset(str(root), "dis", workers=1, progress=False, gap=load_config("config/tiny.yaml").skill.stride)
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


def _protocol(cfg, **eval_keys):
    """The trained config with a one-task, one-camera, one-seed evaluation protocol."""
    import copy

    out = copy.deepcopy(cfg)
    out.eval.tasks, out.eval.cameras, out.eval.first_seed, out.eval.episodes_per_task_camera = [TASK], ["corner"], 0, 1
    for k, v in eval_keys.items():
        setattr(out.eval, k, v)
    return out


def _first_last(history, key="loss"):
    return history[0][key], history[-1][key]


def test_training_lowers_every_loss(trained):
    _, trainer = trained
    for stage in ("skill", "policy", "f2a", "f2a_plan_only", "skill2action", "bc", "pixel_skill", "pixel_policy",
                  "pixel2action"):
        first, last = _first_last(trainer.histories[stage])
        assert last < first, f"{stage}: loss did not fall ({first:.4f} -> {last:.4f})"


@pytest.mark.parametrize("space", ["flow", "pixel"])
def test_stage1_overfits_tiny_set(trained, space):
    """Seed sanity experiment: the autoencoder alone, trained on the 4 most-moving segments of the tiny
    set, reconstructs their motion (flow) or their change of colour (pixel ablation) far better than
    predicting that nothing moves."""
    import torch.nn.functional as F

    from sof_ros.skills.model import PixelSkillAutoencoder, SkillAutoencoder

    cfg, trainer = trained
    d = trainer.data
    starts = torch.from_numpy(d.starts("train"))
    target_all = trainer._targets(space, starts)
    threshold = 0.25 if space == "flow" else 0.1  # working-res px / pixel value change in [-2, 2]
    moving_all = target_all.norm(dim=-1) > threshold
    pick = torch.argsort(moving_all.flatten(1).sum(1), descending=True)[:4]
    target, img, moving = target_all[pick], d.rgb[starts][pick], moving_all[pick]
    torch.manual_seed(0)
    model = (SkillAutoencoder if space == "flow" else PixelSkillAutoencoder)(cfg.skill)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    for _ in range(500):
        rec, _ = model(target, img)
        loss = F.smooth_l1_loss(rec, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        rec, ids = model(target, img)
    assert moving.sum() > 10, "the tiny set has almost no motion: the fixture is broken"
    err = (rec - target).norm(dim=-1)[moving].mean()
    zero = target.norm(dim=-1)[moving].mean()
    assert err < 0.6 * zero, f"{space}: reconstruction error on moving px {err:.3f} not well below {zero:.3f}"
    assert float((rec - target).norm(dim=-1).mean()) < float(target.norm(dim=-1).mean()), "worse than no motion"


def test_reports_written(trained):
    cfg, _ = trained
    out = __import__("pathlib").Path(cfg.train.out)
    for png in ("skill_reconstructions.png", "skill_token_usage.png", "skill_token_timelines.png",
                "policy_flow_plans.png", "loss_curves.png", "pixel_skill_reconstructions.png",
                "pixel_policy_plans.png"):
        assert (out / "plots" / png).stat().st_size > 1000, png
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 < metrics["skill"]["train_codes_used"] <= metrics["skill"]["codebook_size"]
    for name in ("skill.pt", "policy.pt", "f2a.pt", "config.yaml", "instructions.pt"):
        assert (out / name).is_file(), name
    state = torch.load(out / "f2a.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state.values())


def test_overfit_flow2action_succeeds_in_closed_loop(trained, tmp_path):
    """Trained on the noise-free seed-0 demo, the full agent (tokens -> flow plan -> actions) presses the button."""
    from sof_ros.eval import evaluate

    cfg, _ = trained
    res = evaluate(cfg.train.out, ["sof"], _protocol(cfg, max_steps=60), tmp_path / "eval",
                   replan_every=cfg.eval.replan_every, progress=False)
    assert res["rows"]["sof"]["per_task"][TASK] == 1.0, res


def test_pixel_skills_ablation_plans_frames_and_acts(trained, tmp_path):
    """The pixel-space ablation predicts H future frames from tokens and an action chunk from them, and
    runs as an eval row."""
    from sof_ros.eval import evaluate
    from sof_ros.policies import AgentInput, load_policy
    from sof_ros.sim.metaworld_env import MetaWorldArm

    cfg, trainer = trained
    metrics = json.loads((__import__("pathlib").Path(cfg.train.out) / "metrics.json").read_text())
    assert 0 < metrics["pixel_skill"]["train_codes_used"] <= metrics["pixel_skill"]["codebook_size"]
    agent = load_policy("pixel_skills", cfg.train.out)
    arm = MetaWorldArm(TASK, cfg.sim)
    try:
        obs = arm.reset(0)
        inp = AgentInput(rgb=obs.rgb, ee_pos=obs.ee_pos, gripper=obs.gripper)
        plan = agent.plan(inp, arm.instruction)
    finally:
        arm.close()
    r, h = cfg.skill.flow_res, cfg.skill.segment
    assert plan.frames.shape == (h, r, r, 3) and plan.frames.dtype == np.uint8
    assert plan.tokens.shape == (cfg.skill.tokens_per_segment,)
    from sof_ros.flow2action.learned import chunk_length

    assert plan.actions.shape == (chunk_length(cfg.f2a, cfg.skill), 4) and np.all(np.abs(plan.actions) <= 1)
    res = evaluate(cfg.train.out, ["pixel_skills"], _protocol(cfg, max_steps=10), tmp_path / "eval",
                   replan_every=cfg.eval.replan_every, progress=False)
    assert res["rows"]["pixel_skills"]["label"].startswith("Pixel-space skills")


def test_eval_names_a_missing_stage_before_any_rollout(trained, tmp_path):
    import shutil

    from sof_ros.eval import evaluate

    cfg, _ = trained
    ckpt = tmp_path / "ckpt"
    shutil.copytree(cfg.train.out, ckpt)
    (ckpt / "pixel_skill.pt").unlink()
    with pytest.raises(SofError, match=r"pixel_skill\.pt is missing.*--stage pixel_skill"):
        evaluate(str(ckpt), ["sof", "pixel_skills"], _protocol(cfg, max_steps=5), tmp_path / "eval", progress=False)


def test_policy_rejects_bad_inputs(trained):
    from sof_ros.policies import AgentInput, load_policy

    cfg, _ = trained
    agent = load_policy("sof", cfg.train.out)
    frame = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(SofError, match="uint8"):
        agent.plan(AgentInput(rgb=frame.astype(np.float32), ee_pos=np.zeros(3)), "press the button")
    with pytest.raises(SofError, match="empty"):
        agent.plan(AgentInput(rgb=frame, ee_pos=np.zeros(3)), "   ")
    with pytest.raises(SofError, match="ee_pos"):
        agent.plan(AgentInput(rgb=frame, ee_pos=np.array([np.nan, 0, 0])), "press the button")
    with pytest.raises(SofError, match="config.yaml"):
        load_policy("sof", cfg.train.out + "/nope")
    with pytest.raises(SofError, match="unknown policy row 'learned'.*sof_learning_free"):
        load_policy("learned", cfg.train.out)


def test_every_registered_row_follows_the_policy_interface(trained):
    """One registry, one interface: each row loads by its name, plans a well-formed plan whose steps
    cover the re-plan interval, and acts with 4 finite numbers in [-1, 1]."""
    from sof_ros.policies import ROWS, Policy, load_policy
    from sof_ros.ros.policy_node import check_plan
    from sof_ros.sim.metaworld_env import MetaWorldArm

    cfg, _ = trained
    arm = MetaWorldArm(TASK, cfg.sim)
    try:
        obs = arm.reset(0).agent_input()
        for name in ROWS:
            policy = load_policy(name, cfg.train.out, task=TASK)
            assert isinstance(policy, Policy) and policy.name == name
            policy.reset()
            plan = policy.plan(obs, arm.instruction)
            assert check_plan(plan) is None, (name, check_plan(plan))
            assert plan.steps >= min(policy.replan_every, cfg.skill.segment), name
            action = policy.act(plan, obs, 0)
            assert action.shape == (4,) and np.all(np.isfinite(action)) and np.all(np.abs(action) <= 1), name
    finally:
        arm.close()


def test_ddp_two_cpu_processes_gloo(tiny_dataset, tmp_path):
    """torchrun with 2 CPU ranks (gloo): trains stage 1, rank 0 alone writes the weights."""
    import os
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
    # AVX2 kernels as on an EPYC without AVX-512, where this run crashed (test/test_onednn_layout.py)
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "sof_ros.train",
                           "--config", str(cfg_path), "--stage", "skill", "--dataset", str(tiny_dataset),
                           "--out", str(out)], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "skill.pt").is_file()
    hist = json.loads((out / "skill_history.json").read_text())
    assert hist[-1]["step"] == 20


def test_eval_protocol_resumes_shards_and_reports_cis(trained, tmp_path):
    """The evaluation lives in a work directory: shards merge into one table, a re-run skips finished
    episodes, a cut-off record line is ignored, another protocol in the same directory is refused,
    and every row carries its Wilson 95% interval."""
    from sof_ros.eval import evaluate, merge, read_episodes, wilson_ci

    cfg, _ = trained
    proto = _protocol(cfg, max_steps=8, cameras=["corner", "corner2"], episodes_per_task_camera=2)
    work = tmp_path / "eval"
    evaluate(None, ["expert"], proto, work, progress=False, shard=(0, 2))  # corner only
    assert not merge(work)["rows"]["expert"]["complete"]
    evaluate(None, ["expert"], proto, work, progress=False, shard=(1, 2))  # corner2
    res = merge(work)
    row = res["rows"]["expert"]
    assert row["complete"] and row["episodes"] == 4 and set(row["per_camera"]) == {"corner", "corner2"}
    from sof_ros.bench.meta import git_commit, machine
    assert row["commits"] == {git_commit(): 4} and row["machines"] == {machine(): 4}  # which code ran them
    wins = round(row["average"] * 4)
    assert row["ci95"] == pytest.approx(list(wilson_ci(wins, 4)))
    assert res["protocol"]["cameras"] == ["corner", "corner2"] and res["protocol"]["max_steps"] == 8
    assert res["protocol"]["antialias"] is row["antialias"] is proto.sim.antialias  # how its frames were rendered

    rec_file = work / "episodes" / "expert" / TASK / "corner.jsonl"
    before = rec_file.read_text()
    evaluate(None, ["expert"], proto, work, progress=False)  # everything done: nothing re-run
    assert rec_file.read_text() == before
    rec_file.write_text(before + '{"seed": 1, "succ')  # a line cut off by a crash
    assert sorted(read_episodes(rec_file)) == [0, 1]

    with pytest.raises(SofError, match="another protocol"):
        evaluate(None, ["expert"], _protocol(cfg, max_steps=9), work, progress=False)
    with pytest.raises(SofError, match="another protocol.*replan_every"):  # episodes of two intervals never mix
        evaluate(None, ["expert"], proto, work, progress=False, replan_every=2)


def test_shards_started_together_share_one_protocol_file(tmp_path):
    """Two shards started at once on one work directory: one read the protocol file while the other
    had truncated it to rewrite it (a JSONDecodeError traceback), and the union of their tasks could
    lose one's. Many concurrent openers must all succeed and every task must be kept."""
    import threading

    from sof_ros.eval import open_work

    base = {"tasks": [], "cameras": ["corner"], "max_steps": 8, "episodes_per_task_camera": 1, "first_seed": 0,
            "resolution": [64, 64], "replan_every": 0}
    errors = []

    def shard(i):
        try:
            for k in range(40):
                open_work(tmp_path, {**base, "tasks": [f"task-{i}-{k}"]})
        except Exception as e:  # noqa: BLE001 -- collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=shard, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    stored = json.loads((tmp_path / "protocol.json").read_text())
    assert len(stored["tasks"]) == 6 * 40


def test_replan_bench_writes_success_per_interval_with_cis(trained, tmp_path):
    """`sof-bench replan`: one resumable evaluation per interval, its interval recorded in the work
    directory's protocol, success with Wilson intervals in replan.json / .md / .png."""
    from sof_ros.bench.replan import main

    cfg, _ = trained
    out, work = tmp_path / "out", tmp_path / "work"
    main(["--checkpoint", cfg.train.out, "--tasks", TASK, "--episodes", "1", "--intervals", "2", "4",
          "--max-steps", "12", "--work", str(work), "--out", str(out)])
    r = json.loads((out / "replan.json").read_text())
    assert r["command"] and r["commit"] and r["row"] == "sof" and set(r["intervals"]) == {"2", "4"}
    for k, point in r["intervals"].items():
        assert point["episodes"] == len(cfg.eval.cameras) and 0 <= point["ci95"][0] <= point["average"] <= point["ci95"][1]
        assert json.loads((work / f"replan_every_{k}" / "protocol.json").read_text())["replan_every"] == int(k)
    assert (out / "replan.png").stat().st_size > 1000 and "| 2 |" in (out / "replan.md").read_text()
    from sof_ros.flow2action.learned import chunk_length

    with pytest.raises(SofError, match="exceed the action chunk"):
        main(["--checkpoint", cfg.train.out, "--intervals", str(chunk_length(cfg.f2a, cfg.skill) + 1), "--work", str(work)])


def test_eval_out_is_a_results_file_or_a_directory(tmp_path):
    from sof_ros.eval import results_path

    assert results_path(str(tmp_path)) == str(tmp_path / "metaworld.json")
    assert results_path("runs/x/") == str(__import__("pathlib").Path("runs/x") / "metaworld.json")
    assert results_path("runs/x.json") == "runs/x.json"
    with pytest.raises(SofError, match="results file"):
        results_path("runs/table.md")


def test_combine_keeps_each_rows_provenance_and_refuses_another_protocol(tmp_path):
    """Rows measured by separate runs (another commit, another row) share one results file only on
    one protocol, and each says which command and commit measured it."""
    from sof_ros.eval import combine, main, markdown

    proto = {"tasks": [TASK], "cameras": ["corner"], "max_steps": 500, "episodes_per_task_camera": 5,
             "first_seed": 1000, "resolution": [128, 128], "replan_every": 0}

    def results(commit, rows, **changes):
        row = {"label": "x", "per_task": {TASK: 0.4}, "per_task_ci95": {TASK: [0.1, 0.8]}, "per_camera": {"corner": 0.4},
               "average": 0.4, "ci95": [0.1, 0.8], "episodes": 5, "complete": True, "wall_s_per_episode": 1.0}
        out = {"command": f"sof-eval at {commit}", "commit": commit, "machine": "m", "protocol": {**proto, **changes},
               "rows": {r: {**row, "episodes_per_task_camera": n} for r, n in rows.items()}}
        path = tmp_path / f"{commit}_{'_'.join(rows)}_{len(changes)}.json"
        path.write_text(json.dumps(out))
        return path

    a = results("aaaa", {"sof": 10, "bc": 10})
    b = results("bbbb", {"sof_learning_free_oracle": 5})
    res = combine([a, b])
    assert list(res["rows"]) == ["sof", "sof_learning_free_oracle", "bc"]  # the rows' canonical order
    assert res["rows"]["bc"]["provenance"]["commit"] == "aaaa"
    assert res["rows"]["sof_learning_free_oracle"]["provenance"] == {"command": "sof-eval at bbbb", "commit": "bbbb",
                                                                     "machine": "m", "file": b.name}
    assert res["protocol"]["episodes_per_task_camera"] == 5  # what every row has at least
    out = tmp_path / "all.json"
    main(["--combine", str(a), str(b), "--out", str(out)])
    md = out.with_suffix(".md").read_text()
    assert "| sof_learning_free_oracle | `bbbb` | not recorded | the row's defaults | `sof-eval at bbbb` |" in md
    assert json.loads(out.read_text())["rows"]["sof"]["provenance"]["commit"] == "aaaa"
    assert combine([out])["rows"]["sof"]["provenance"]["file"] == a.name  # re-combining keeps where rows came from
    assert "Where each row" not in markdown({**json.loads(a.read_text()), "rows": json.loads(a.read_text())["rows"]})
    one = json.loads(a.read_text())
    assert "Code that ran" not in markdown({**one, "rows": {"sof": {**one["rows"]["sof"], "commits": {"aaaa": 10}}}})
    resumed = markdown({**one, "rows": {"sof": {**one["rows"]["sof"], "commits": {"not recorded": 4, "a" * 40: 6}}}})
    assert "- sof: not recorded (4), `aaaaaaaaaaaa` (6)" in resumed  # a row finished by another run says so

    # a row replaced by a new run: keep the others (--rows), then add the new file
    kept = tmp_path / "kept.json"
    main(["--combine", str(out), "--rows", "sof", "bc", "--out", str(kept)])
    assert list(json.loads(kept.read_text())["rows"]) == ["sof", "bc"]
    new_oracle = results("eeee", {"sof_learning_free_oracle": 5})
    with pytest.raises(SofError, match="row 'sof_learning_free_oracle' is in"):
        combine([out, new_oracle])
    res = combine([kept, new_oracle])
    assert res["rows"]["sof_learning_free_oracle"]["provenance"]["commit"] == "eeee"
    assert res["rows"]["sof"]["provenance"]["file"] == a.name
    with pytest.raises(SofError, match="--rows expert: no such row"):
        combine([a, b], only=["sof", "expert"])

    with pytest.raises(SofError, match="another protocol.*max_steps"):
        combine([a, results("cccc", {"expert": 5}, max_steps=200)])
    # rendering is a row's (its checkpoint's training frames), not the table's: rows of both kinds combine
    aliased = results("ffff", {"expert": 5}, antialias=True)
    plain = json.loads(aliased.read_text())
    plain["protocol"]["antialias"], plain["rows"]["expert"]["antialias"] = False, False
    plain_path = tmp_path / "plain.json"
    plain_path.write_text(json.dumps({**plain, "rows": {"pixel_skills": plain["rows"]["expert"]}}))
    res = combine([aliased, plain_path])
    assert "antialias" not in res["protocol"] and res["rows"]["pixel_skills"]["antialias"] is False
    assert "| pixel_skills | `ffff` | no |" in markdown({"command": "c", "commit": "x", "machine": "m", **res})
    with pytest.raises(SofError, match="row 'sof' is in"):
        combine([a, results("dddd", {"sof": 5})])
    with pytest.raises(SofError, match="not a sof-eval results file"):
        combine([a, tmp_path / "missing.json"])


def test_wilson_interval_and_ties():
    from sof_ros.eval import tied, wilson_ci

    lo, hi = wilson_ci(0, 10)
    assert lo == 0.0 and 0.25 < hi < 0.35  # never the degenerate [0, 0] of mean +- 2 SE
    lo, hi = wilson_ci(33, 66)
    assert lo < 0.5 < hi and hi - lo < 0.25
    a = {"average": 0.55, "ci95": [0.45, 0.65]}
    assert tied(a, {"average": 0.50, "ci95": [0.40, 0.60]})
    assert not tied(a, {"average": 0.30, "ci95": [0.20, 0.40]})


def test_metrics_of_earlier_stages_survive_training_one_stage():
    """metrics.json lost the f2a/bc/skill2action entries when one stage was retrained (shallow update)."""
    from sof_ros.train import deep_update

    old = {"actions": {"f2a": {"train_samples": 10}, "bc": {"train_samples": 10}}, "train_seconds": {"f2a": 1.0}}
    new = {"actions": {"bc": {"train_samples": 12}}, "train_seconds": {"bc": 2.0}}
    merged = deep_update(old, new)
    assert merged["actions"] == {"f2a": {"train_samples": 10}, "bc": {"train_samples": 12}}
    assert merged["train_seconds"] == {"f2a": 1.0, "bc": 2.0}
