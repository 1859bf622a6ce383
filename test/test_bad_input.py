"""Bad input gets one clear line naming the file / key and what to do (issue 10): damaged episodes
stop sof-train, damaged or mismatched weights and checkpoint configs are named, list-typed config
keys are type-checked."""
import pytest
import torch
import yaml

from sof_ros.config import load_checkpoint_config, load_config, to_dict
from sof_ros.data.dataset import Dataset
from sof_ros.errors import SofError
from sof_ros.train import build_models, load_weights, main as train_main, save_weights
from synthetic_episodes import tiny_config, write_episode


def _train_cli(capsys, config, *stages) -> str:
    """Run sof-train; expect the clean exit 2 and return its single stderr line."""
    with pytest.raises(SystemExit) as exc:
        train_main(["--config", str(config), "--stage", *stages])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2, err
    assert "Traceback" not in err and err.count("error: ") == 1, err
    last = err.splitlines()[-1]  # progress bars may come before it
    assert last.startswith("error: "), err
    return last


@pytest.fixture
def dataset(tmp_path):
    ds = Dataset.create(tmp_path / "ds")
    write_episode(ds, 0, actions=True)
    return ds


def test_sof_train_rejects_episode_with_short_proprioception(dataset, tmp_path, capsys):
    # ee_pos and gripper one frame short of rgb: before, training ran and shifted later episodes
    write_episode(dataset, 1, t=10, proprio_len=9)
    write_episode(dataset, 2, t=10)
    err = _train_cli(capsys, tiny_config(tmp_path / "c.yaml", dataset.root, tmp_path / "out"), "skill")
    assert "ep_000001.h5" in err and "'ee_pos' has shape (9, 3), expected (10, 3)" in err
    assert not (tmp_path / "out" / "skill.pt").exists()


def test_sof_train_rejects_short_actions_array(dataset, tmp_path, capsys):
    write_episode(dataset, 1, actions=True, actions_len=6)  # 9 steps between 10 frames
    err = _train_cli(capsys, tiny_config(tmp_path / "c.yaml", dataset.root, tmp_path / "out"), "skill")
    assert "actions/ep_000001.h5" in err and "'actions' has shape (6, 4), expected (9, 4)" in err


# --- weights ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A checkpoint directory as sof-train writes it, for the tiny config (untrained weights)."""
    root = tmp_path_factory.mktemp("ckpt")
    cfg = load_config("config/tiny.yaml")
    (root / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    for name, model in build_models(cfg).items():
        save_weights(model, root / f"{name}.pt")
    return root, cfg


def _damage(path, how):
    good = path.read_bytes()
    if how == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif how == "garbage":
        path.write_bytes(b"not a torch file" * 20)
    elif how == "not-a-state-dict":
        torch.save([1, 2, 3], path)
    return good


@pytest.mark.parametrize("how", ["truncated", "garbage", "not-a-state-dict"])
def test_load_weights_names_damaged_file(checkpoint, how):
    root, cfg = checkpoint
    path = root / "skill.pt"
    good = _damage(path, how)
    try:
        with pytest.raises(SofError, match=r"skill\.pt .*retrain that stage \(sof-train --stage skill.*re-copy"):
            load_weights(build_models(cfg)["skill"], path)
    finally:
        path.write_bytes(good)


def test_load_weights_names_wrong_shapes_and_wrong_stage(checkpoint, tmp_path):
    root, cfg = checkpoint
    wider = load_config("config/tiny.yaml", {"skill": {"width": 4}})
    with pytest.raises(SofError, match=r"skill\.pt does not fit the skill model .*shape mismatch.*model wants"):
        load_weights(build_models(wider)["skill"], root / "skill.pt")
    (tmp_path / "policy.pt").write_bytes((root / "skill.pt").read_bytes())  # another stage's file
    with pytest.raises(SofError, match=r"policy\.pt does not fit the policy model .*missing tensor"):
        load_weights(build_models(cfg)["policy"], tmp_path / "policy.pt")


def _load_at_run_time(checkpoint):
    """What sof-eval and the ROS nodes call: the policy registry's SOF row (SofAgent.load before it)."""
    try:
        from sof_ros.policies import load_policy
    except ImportError:
        from sof_ros.agent import SofAgent

        return SofAgent.load(checkpoint)
    return load_policy("sof", checkpoint)


def test_run_time_load_names_truncated_weights(checkpoint):
    root, _ = checkpoint
    good = _damage(root / "f2a.pt", "truncated")
    try:
        with pytest.raises(SofError, match=r"f2a\.pt is not readable f2a weights"):
            _load_at_run_time(root)
    finally:
        (root / "f2a.pt").write_bytes(good)


def test_sof_train_names_truncated_earlier_stage(dataset, checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "skill.pt").write_bytes((checkpoint[0] / "skill.pt").read_bytes()[:100])
    err = _train_cli(capsys, tiny_config(tmp_path / "c.yaml", dataset.root, out), "policy")
    assert f"{out / 'skill.pt'} is not readable skill weights" in err


# --- checkpoint config ----------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("skill: [unclosed\n", "is not valid YAML"),
    ("- just a list\n", "must hold a mapping"),
    ("skill:\n  fsq_levels: 7\n", "'config.yaml.skill.fsq_levels' must be a list of int"),
    ("skill:\n  nope: 1\n", "unknown config key 'config.yaml.skill.nope'"),
])
def test_checkpoint_config_errors_name_the_file(tmp_path, text, expected):
    (tmp_path / "config.yaml").write_text(text)
    with pytest.raises(SofError) as exc:
        load_checkpoint_config(tmp_path)
    msg = str(exc.value)
    assert str(tmp_path / "config.yaml") in msg and expected in msg and "re-copy the checkpoint" in msg, msg
    assert "\n" not in msg


def test_checkpoint_config_round_trip(checkpoint):
    root, cfg = checkpoint
    assert load_checkpoint_config(root) == cfg
    with pytest.raises(SofError, match="is not a sof_ros checkpoint"):
        load_checkpoint_config(root / "nowhere")


def test_dis_preset_lives_in_the_estimator_name(tmp_path):
    """A separate preset key made sof-flow write flow/dis_fast while sof-train and the camera node read
    flow/dis: the key is gone, a YAML naming it is told what to write, and old checkpoints still load."""
    with pytest.raises(SofError, match=r"'overrides.flow.dis_preset' was removed: .*flow.estimator to dis .*dis_fast"):
        load_config(overrides={"flow": {"dis_preset": "fast"}})
    (tmp_path / "config.yaml").write_text("flow:\n  estimator: dis\n  dis_preset: medium\n")
    assert load_checkpoint_config(tmp_path).flow.estimator == "dis"


# --- list-typed config keys ------------------------------------------------------------------------
@pytest.mark.parametrize("overrides, expected", [
    ({"skill": {"fsq_levels": 7}}, r"'overrides.skill.fsq_levels' must be a list of int .*got 7"),
    ({"eval": {"tasks": "door-open"}}, r"'overrides.eval.tasks' must be a list of str .*got 'door-open'"),
    ({"skill": {"fsq_levels": [8, "5"]}}, r"'overrides.skill.fsq_levels\[1\]' must be int, got '5'"),
    ({"skill": {"fsq_levels": [8, True]}}, r"'overrides.skill.fsq_levels\[1\]' must be int, got True"),
    ({"collect": {"tasks": ["door-open", 3]}}, r"'overrides.collect.tasks\[1\]' must be str, got 3"),
    ({"train": {"skill_steps": 1.5}}, r"'overrides.train.skill_steps' must be int, got 1.5"),
])
def test_config_type_checks_lists(overrides, expected):
    with pytest.raises(SofError, match=expected):
        load_config(overrides=overrides)


def test_config_accepts_well_typed_lists(tmp_path):
    (tmp_path / "c.yaml").write_text("skill:\n  fsq_levels: [7, 5, 5]\neval:\n  tasks: [door-open]\n")
    cfg = load_config(tmp_path / "c.yaml", {"train": {"lr": 1}})
    assert cfg.skill.fsq_levels == [7, 5, 5] and cfg.eval.tasks == ["door-open"]
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)


@pytest.mark.parametrize("flag", ["--episodes", "--max-steps", "--replan-every", "--workers"])
def test_sof_eval_refuses_counts_below_one(flag, capsys, tmp_path):
    """0 used to mean 'the protocol's own' without a word (`if a.episodes:`), so --replan-every 0
    ran at the default interval and the results file said 0."""
    from sof_ros.eval import main as eval_main

    with pytest.raises(SystemExit) as exc:
        eval_main(["--rows", "expert", flag, "0", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "r.json")])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "Traceback" not in err
    assert err.splitlines()[-1] == f"error: {flag} must be at least 1, got 0; leave it out for the protocol's own"
    assert not (tmp_path / "w").exists()


def test_load_policy_refuses_a_non_positive_replan_interval():
    from sof_ros.policies import load_policy

    with pytest.raises(SofError, match="replan_every must be a positive number of control steps, got 0"):
        load_policy("sof_learning_free_oracle", replan_every=0)


def test_sof_eval_solver_settings_are_checked_before_any_rollout(capsys, tmp_path):
    from sof_ros.eval import main as eval_main, solver_overrides

    assert solver_overrides(["held_motion=translation", "gain=0.3", "n_points=200"]) == {
        "held_motion": "translation", "gain": 0.3, "n_points": 200}
    with pytest.raises(SofError, match="'helt_motion=se3'.*settings: gain, precision_m"):
        solver_overrides(["helt_motion=se3"])
    with pytest.raises(SofError, match="motion_model must be 'translation' or 'se3', got 'affine'"):
        solver_overrides(["motion_model=affine"])
    for rows, flag, expected in ((["sof_learning_free_oracle"], "gain=-1", "gain must be a positive number, got -1"),
                                 (["expert"], "gain=0.3", "--solver sets the geometric solver of the learning-free rows")):
        with pytest.raises(SystemExit):
            eval_main(["--rows", *rows, "--solver", flag, "--work", str(tmp_path / "w"), "--out", str(tmp_path / "r.json")])
        err = capsys.readouterr().err.strip()
        assert "Traceback" not in err and expected in err.splitlines()[-1], err
        assert not (tmp_path / "w").exists()
