"""Learning from video only (issue 11): Stages 1-2 train on RGB-only episodes from sof-import-videos,
and a mixed dataset trains the action stages on its action-labelled robot episodes alone."""
import numpy as np
import pytest
import torch

from sof_ros.config import load_checkpoint_config
from sof_ros.data.dataset import Dataset
from sof_ros.learn.data import resize_rgb
from sof_ros.text import InstructionEncoder
from sof_ros.train import build_models, load_weights, main as train_main
from synthetic_episodes import sliding_frames, tiny_config, write_episode, write_mp4

MOTIONS = {"slide right": (1, 0), "slide down": (0, 1)}


@pytest.fixture(scope="module")
def video_checkpoint(tmp_path_factory):
    """Two clips (texture sliding right / down) -> sof-import-videos -> sof-flow -> sof-train skill policy."""
    from sof_ros.data.video_import import main as import_main
    from sof_ros.flow.extract import main as flow_main

    root = tmp_path_factory.mktemp("video_only")
    clips = root / "clips"
    clips.mkdir()
    for i, (text, step) in enumerate(MOTIONS.items()):
        write_mp4(clips / f"{text.replace(' ', '_')}.mp4", sliding_frames(24, (2 * step[0], 2 * step[1]), seed=i, size=64))
    (root / "instructions.csv").write_text("".join(f"{t.replace(' ', '_')}.mp4,{t}\n" for t in MOTIONS))
    ds = root / "ds"
    import_main([str(clips), "--out", str(ds), "--instructions", str(root / "instructions.csv"), "--size", "32", "32"])
    flow_main([str(ds), "--workers", "1", "--config", "config/tiny.yaml"])  # the gap tiny.yaml trains on
    out = root / "ckpt"
    config = tiny_config(root / "c.yaml", ds, out, steps=150, policy={"use_proprio": False})  # videos: no arm state
    train_main(["--config", str(config), "--stage", "skill", "policy"])
    return ds, out


def test_imported_videos_are_rgb_only(video_checkpoint):
    ds, _ = video_checkpoint
    infos = Dataset(ds, validate=True).episodes()
    assert len(infos) == 2 and all(not i.has_proprio and not i.in_d_act and i.source == "video" for i in infos)


def test_flow_plan_from_video_only_checkpoint(video_checkpoint):
    """Load Stages 1-2 and decode a flow plan from a frame + instruction: it moves the way the clip
    with that instruction moved."""
    ds, out = video_checkpoint
    cfg = load_checkpoint_config(out)
    models = build_models(cfg)
    skill, policy = (load_weights(models[name], out / f"{name}.pt") for name in ("skill", "policy"))
    cached = {k: v.numpy() for k, v in torch.load(out / "instructions.pt", weights_only=True).items()}
    text = InstructionEncoder(cached)
    data = Dataset(ds)
    for info in data.episodes():
        frame = data.load(info.path)["rgb"][0]
        img = torch.from_numpy(resize_rgb(frame, cfg.skill.image_res)[None])
        with torch.no_grad():
            tokens = policy.generate(img, torch.from_numpy(text(info.instruction)[None]))
            plan = skill.decode_ids(tokens, img)[0].numpy()
        assert plan.shape == (cfg.skill.segment, cfg.skill.flow_res, cfg.skill.flow_res, 2)
        mean = plan.mean((0, 1, 2))
        axis = int(np.argmax(np.abs(MOTIONS[info.instruction])))
        assert mean[axis] > 0.2 and mean[axis] > 2 * abs(mean[1 - axis]), (info.instruction, mean)


def test_mixed_dataset_trains_actions_on_d_act_only(tmp_path, capsys):
    """RGB-only videos + robot episodes with actions: all SOF stages train; the action head sees only
    the robot episodes that carry proprioception (an in_d_act episode without it is left out, loudly)."""
    from sof_ros.train import train
    from sof_ros.config import load_config

    ds = Dataset.create(tmp_path / "ds")
    write_episode(ds, 0, t=10, proprio=False)  # a video
    write_episode(ds, 1, t=12, proprio=False, task="down", instruction="slide down", step=(0, 1))
    write_episode(ds, 2, t=8, actions=True)  # robot episodes, D_act
    write_episode(ds, 3, t=9, actions=True)
    write_episode(ds, 4, t=10, proprio=False, actions=True)  # actions but no ee_pos/gripper
    cfg = load_config(tiny_config(tmp_path / "c.yaml", ds.root, tmp_path / "out", steps=3, policy={"use_proprio": False}))
    trainer = train(cfg, ("skill", "policy", "f2a"), progress=False)
    d = trainer.data
    assert [e.has_proprio for e in d.episodes] == [False, False, True, True, False]
    assert [e.in_d_act for e in d.episodes] == [False, False, True, True, False]
    assert trainer.metrics["actions"]["f2a"]["train_samples"] == (8 - 1) + (9 - 1)
    assert d.proprio[d.episodes[0].start: d.episodes[0].start + 10].abs().sum() == 0  # masked, not garbage
    assert "leaves out 1 in_d_act episode(s) without ee_pos/gripper" in capsys.readouterr().err
    assert (tmp_path / "out" / "f2a.pt").is_file()


def test_action_stage_without_d_act_names_what_is_missing(tmp_path):
    from sof_ros.config import load_config
    from sof_ros.errors import SofError
    from sof_ros.train import train

    ds = Dataset.create(tmp_path / "ds")
    write_episode(ds, 0, proprio=False)
    cfg = load_config(tiny_config(tmp_path / "c.yaml", ds.root, tmp_path / "out", steps=2))
    with pytest.raises(SofError, match="f2a has no action-labelled episodes .*ee_pos/gripper.*--stage skill policy"):
        train(cfg, ("skill", "f2a"), progress=False)


def test_stage2_on_proprioception_refuses_videos(tmp_path):
    """Zeros standing in for a video's arm state would train Stage 2 on a state no robot reports."""
    from sof_ros.config import load_config
    from sof_ros.errors import SofError
    from sof_ros.train import train

    ds = Dataset.create(tmp_path / "ds")
    write_episode(ds, 0, proprio=False)
    write_episode(ds, 1, actions=True)
    cfg = load_config(tiny_config(tmp_path / "c.yaml", ds.root, tmp_path / "out", steps=2))
    assert cfg.policy.use_proprio
    with pytest.raises(SofError, match=r"1 of 2 episodes have no ee_pos/gripper.*policy.use_proprio: false"):
        train(cfg, ("skill", "policy"), progress=False)
