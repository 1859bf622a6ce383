"""Cross-embodiment (issue 13): the Panda and the Sawyer in the same robosuite scene and camera, their
scripted experts, Stage 3 for a new arm on another checkpoint's Stages 1-2 (`sof-train
--init-from`) with the embodiment recorded, and the benchmark's verdict on the issue's targets."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from synthetic_episodes import tiny_config, write_episode

from sof_ros.data.dataset import Dataset

ROOT = Path(__file__).resolve().parents[1]


def test_transfer_configs_differ_only_in_the_arm():
    """The comparison is controlled: same tasks, camera, networks and budgets; only the arm and paths differ."""
    a, b = (yaml.safe_load((ROOT / f"config/transfer_{arm}.yaml").read_text()) for arm in ("panda", "sawyer"))
    assert (a["sim"].pop("robot"), b["sim"].pop("robot")) == ("panda", "sawyer")
    for cfg in (a, b):
        cfg["train"].pop("dataset"), cfg["train"].pop("out")
    assert a == b


@pytest.fixture(scope="module")
def arms():
    pytest.importorskip("robosuite", reason="robosuite 1.4 is installed with LIBERO by ./scripts/install.sh")
    from sof_ros.config import SimConfig
    from sof_ros.sim import make_arm

    made = {robot: make_arm("Lift", SimConfig(backend="robosuite", robot=robot, camera="sof_front"))
            for robot in ("panda", "sawyer")}
    yield made
    for arm in made.values():
        arm.close()


def test_both_arms_share_the_scene_and_the_camera(arms):
    from sof_ros.geometry import world_to_pixel

    world_cams = []
    for robot, arm in arms.items():
        obs = arm.reset(7)
        assert arm.robot == robot and obs.rgb.shape == (128, 128, 3) and obs.rgb.std() > 10
        world_cams.append(arm.base_pose() @ obs.cam_pose)
        # the cube: masked, and its centre projects inside its own mask (camera model, depth and frames agree)
        cube = arm.model.body(arm._objects["cube"]).id
        assert obs.object_mask.sum() > 15 and obs.robot_mask.sum() > 15
        v, u = np.nonzero(obs.object_mask)
        uv, z = world_to_pixel(obs.intrinsics, obs.cam_pose, obs.body_pos[cube][None])
        assert z[0] > 0 and u.min() - 2 <= uv[0, 0] <= u.max() + 2 and v.min() - 2 <= uv[0, 1] <= v.max() + 2
        assert 0.0 <= obs.gripper <= 1.0
    assert np.allclose(world_cams[0], world_cams[1], atol=1e-6)  # one camera, fixed in the world
    # same seed, same scene: the cube lies in the same place in the world for both arms
    cubes = [arm.base_pose()[:3, :3] @ arm.observe().body_pos[arm.model.body(arm._objects["cube"]).id]
             + arm.base_pose()[:3, 3] for arm in arms.values()]
    assert np.allclose(cubes[0], cubes[1], atol=1e-5)  # the scene, cube size included, is built seeded


def test_the_scripted_expert_lifts_the_cube_with_either_arm(arms):
    from sof_ros.sim import make_expert

    for robot, arm in arms.items():
        arm.with_rgb, arm.with_depth = False, False  # the expert does not look
        expert = make_expert("Lift", arm.cfg)
        obs = arm.reset(1001)
        expert.reset()
        for step in range(120):
            obs = arm.step(expert.get_action(obs.state))
            if obs.success:
                break
        assert obs.success, f"{robot}: the expert did not lift the cube in 120 control steps"
        assert obs.gripper < 0.9  # holding it


def _videos(root: Path, start: int, with_actions: bool) -> Dataset:
    ds = Dataset.create(root)
    for i in range(3):
        write_episode(ds, start + i, t=12, actions=with_actions and i < 2, instruction="slide right", task="slide")
    return ds


def test_stage3_for_a_new_arm_starts_from_another_checkpoints_video_stages(tmp_path, capsys):
    from sof_ros.config import load_checkpoint_config, load_config
    from sof_ros.policies import load_policy
    from sof_ros.train import main as train_main

    src = tmp_path / "sawyer"
    src_cfg = tiny_config(tmp_path / "s.yaml", _videos(tmp_path / "ds_sawyer", 0, False).root, src, steps=2,
                          sim={"backend": "robosuite", "robot": "sawyer", "camera": "sof_front"}, skill={"stride": 1})
    train_main(["--config", str(src_cfg), "--stage", "skill", "policy"])
    # the new arm's config asks for other network sizes: the copied stages' sections win
    dst = tmp_path / "panda"
    dst_cfg = tiny_config(tmp_path / "p.yaml", _videos(tmp_path / "ds_panda", 10, True).root, dst, steps=2,
                          sim={"backend": "robosuite", "robot": "panda", "camera": "sof_front"}, skill={"width": 12, "stride": 1})
    with pytest.raises(SystemExit):
        train_main(["--config", str(dst_cfg), "--init-from", str(src), "--stage", "skill", "f2a"])
    assert "copies the video stages; do not also train skill" in capsys.readouterr().err
    train_main(["--config", str(dst_cfg), "--init-from", str(src), "--stage", "f2a"])
    for stage in ("skill", "policy"):
        assert (dst / f"{stage}.pt").read_bytes() == (src / f"{stage}.pt").read_bytes()
    cfg = load_checkpoint_config(dst)
    assert cfg.skill.width == load_config(src_cfg).skill.width == 8 and cfg.sim.robot == "panda"
    rec = json.loads((dst / "embodiment.json").read_text())
    assert rec["arm"] == "panda" and rec["action_frame"] == "panda_link0" and rec["camera"] == "sof_front"
    assert rec["stages"]["skill"]["arm"] == rec["stages"]["policy"]["arm"] == "sawyer"
    assert rec["stages"]["skill"]["copied_from"] == str(src)
    assert rec["stages"]["f2a"] == {"arm": "panda", "dataset": str(tmp_path / "ds_panda")}
    policy = load_policy("sof", str(dst))  # the whole row loads: Sawyer skills, Panda head
    assert policy.models["f2a"] is not None


def test_verdict_names_what_transfers():
    from sof_ros.bench.transfer import markdown, verdict

    def row(avg, ci, per):
        return {"average": avg, "ci95": ci, "per_task": {t: p for t, (p, _) in per.items()},
                "per_task_ci95": {t: c for t, (_, c) in per.items()}, "label": "x", "arm": "panda", "videos": "x",
                "episodes": 30}

    rows = {"panda_only": row(0.6, [0.42, 0.75], {"Lift": (0.9, [0.6, 0.98]), "Stack": (0.3, [0.1, 0.6]),
                                                  "Door": (0.2, [0.05, 0.5]), "Nut": (0.7, [0.4, 0.9])}),
            "sawyer_to_panda": row(0.5, [0.33, 0.67], {"Lift": (0.8, [0.5, 0.95]), "Stack": (0.0, [0.0, 0.3]),
                                                       "Door": (0.9, [0.6, 0.98]), "Nut": (0.1, [0.02, 0.4])}),
            "bc_panda": row(0.2, [0.1, 0.38], {"Lift": (0.4, [0.15, 0.7]), "Stack": (0.0, [0.0, 0.3]),
                                               "Door": (0.1, [0.02, 0.4]), "Nut": (0.1, [0.02, 0.4])})}
    v = verdict(rows, 4)
    assert v["sawyer_to_panda_within_panda_only_ci"] and v["sawyer_to_panda_tied_with_panda_only"]
    assert v["sawyer_to_panda_mean_above_bc"] and not v["sawyer_to_panda_ci_above_bc_ci"]
    transfers = {task: entry["transfers"] for task, entry in v["per_task"].items()}
    # tied: transfers; at zero: does not; better on the Panda than the Panda's own: transfers; worse: does not
    assert transfers == {"Lift": True, "Stack": False, "Door": True, "Nut": False}
    result = {"command": "c", "commit": "abc", "machine": "m", "rows": rows, "curve": {}, "verdict": v,
              "protocol": {"robosuite": "1.4.0", "tasks": ["Lift", "Stack"], "camera": "sof_front",
                           "instructions": {"Lift": "lift the red cube", "Stack": "stack"}, "resolution": [128, 128],
                           "first_seed": 1000, "episodes_per_task": 15, "curve_episodes_per_task": 10, "max_steps": 150,
                           "d_act_main": 4, "sizes": [1, 2, 4, 8]}}
    md = markdown(result)
    assert "Lift: transfers" in md and "Stack: does not" in md and "panda_only and sawyer_to_panda" in md


def test_both_arms_videos_train_stages_1_2(tmp_path):
    """`sof-bench transfer`'s Sawyer + Panda dataset trains Stages 1-2: its flagged D_act episodes keep
    their action files (linked), so Stage 2 leaves them out as in each arm's own dataset; without them
    the data loader stopped with 'has no actions' before any training."""
    from sof_ros.bench.transfer import combined_dataset
    from sof_ros.config import load_config
    from sof_ros.learn.data import SegmentData
    from sof_ros.train import segment_data, train

    cfgs = {}
    for arm, start in (("panda", 0), ("sawyer", 10)):
        ds = _videos(tmp_path / f"ds_{arm}", start, True)
        cfgs[arm] = load_config(tiny_config(tmp_path / f"{arm}.yaml", ds.root, tmp_path / arm, steps=2,
                                            skill={"stride": 1}))
    root = combined_dataset(cfgs, tmp_path / "work")
    assert len(Dataset(root).episode_paths()) == 6 and len(list((root / "actions").iterdir())) == 4
    cfg = cfgs["panda"]
    cfg.train.dataset, cfg.train.out = str(root), str(tmp_path / "both")
    data: SegmentData = segment_data(cfg, progress=False)
    assert len(data.d_act_episodes(None)) == 4  # 2 flagged per arm, none of them in validation
    train(cfg, stages=("skill", "policy"), progress=False)
    assert (tmp_path / "both" / "policy.pt").is_file()
