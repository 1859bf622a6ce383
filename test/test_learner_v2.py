"""The pieces of learner v2, each on inputs with a known answer (no simulator, seconds):
k-gap flow extraction, strided segments, flow normalisation, the plan-only head, the random
shift, sampling, temporal ensembling and the token-sharing chance baseline."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sof_ros.config import Flow2ActionConfig, SkillConfig, SofConfig
from sof_ros.data.dataset import Dataset, DatasetError, validate_dataset
from synthetic_episodes import SIZE, sliding_frames, write_episode


def test_gap_flow_is_the_motion_over_k_frames(tmp_path):
    """sof-flow --gap k stores flow from t to t+k under <name>_k<k> (T-k fields): a texture sliding
    1 px per frame moves ~k px; the dataset validator knows the shorter length and rejects a wrong one."""
    from sof_ros.flow.extract import extract_dataset

    ds = Dataset.create(tmp_path / "ds")
    write_episode(ds, 0, t=12, flow=False, step=(1, 0))
    summary = extract_dataset(ds.root, "dis", workers=1, progress=False, gap=3)
    assert summary["estimator"] == "dis_k3" and summary["pairs"] == 9
    flow = ds.load(ds.episode_paths()[0], ("flow/dis_k3",))["flow/dis_k3"].astype(np.float32)
    assert flow.shape == (9, SIZE, SIZE, 2)
    inner = flow[:, 8:-8, 8:-8]
    assert abs(float(np.median(inner[..., 0])) - 3.0) < 0.5 and abs(float(np.median(inner[..., 1]))) < 0.5
    validate_dataset(ds.root)
    import h5py

    with h5py.File(ds.episode_paths()[0], "a") as f:
        f.create_dataset("flow/dis_k2", data=np.zeros((11, SIZE, SIZE, 2), np.float16))  # should be 10
    with pytest.raises(DatasetError, match="dis_k2"):
        validate_dataset(ds.root)


def _strided_dataset(tmp_path, t=12, stride=2):
    """One episode whose stored k-gap flow at frame i is (i, -i) everywhere, actions (i, 0, 0, 1)."""
    ds = Dataset.create(tmp_path / "ds")
    rgb = sliding_frames(t)
    idx = np.arange(t - stride, dtype=np.float32)
    flow = np.stack([idx, -idx], -1)[:, None, None, :] * np.ones((1, SIZE, SIZE, 1), np.float32)
    acts = np.stack([np.arange(t - 1), np.zeros(t - 1), np.zeros(t - 1), np.ones(t - 1)], -1).astype(np.float32)
    arrays = {"rgb": rgb, f"flow/dis_k{stride}": flow.astype(np.float16),
              "ee_pos": np.zeros((t, 3)), "gripper": np.zeros(t, np.float32)}
    ds.write_episode(0, dict(task="a", instruction="do a", source="metaworld", success=True, camera="c",
                             in_d_act=True), arrays, acts)
    return ds


def test_segments_are_strided_and_padded(tmp_path):
    from sof_ros.learn.data import SegmentData

    ds = _strided_dataset(tmp_path)
    cfg = SkillConfig(segment=3, stride=2, flow_res=SIZE, image_res=SIZE)
    d = SegmentData(str(ds.root), cfg, val_fraction=0.0, progress=False, chunk=5)
    seg = d.segment(torch.tensor([0, 3]))
    assert seg.shape == (2, 3, SIZE, SIZE, 2)
    assert seg[0, :, 0, 0, 0].tolist() == [0, 2, 4] and seg[1, :, 0, 0, 0].tolist() == [3, 5, 7]
    assert seg[1, :, 0, 0, 1].tolist() == [-3, -5, -7]
    late = d.segment(torch.tensor([8]))[0, :, 0, 0, 0].tolist()  # 8 -> 10 exists; 10 -> 12 and later do not
    assert late == [8, 0, 0]
    chunk = d.action_chunk(torch.tensor([9]))
    assert chunk[0, :, 0].tolist() == [9, 10, 0, 0, 0] and chunk[0, :, 3].tolist() == [1] * 5  # gripper held


def test_flow_normalisation_is_measured_and_travels_with_the_weights(tmp_path):
    """flow_scale 0: sof-train sets the scale to the std of moving flow, and it is saved in the state dict;
    flow_scale 1 (v1) keeps the state dict as it was, so v1 checkpoints still load."""
    from sof_ros.learn.data import SegmentData
    from sof_ros.skills.model import SkillAutoencoder

    ds = _strided_dataset(tmp_path)
    cfg = SkillConfig(segment=3, stride=2, flow_res=16, image_res=16, flow_scale=0, tokens_per_segment=2, width=8)
    d = SegmentData(str(ds.root), cfg, val_fraction=0.0, progress=False)
    starts = d.starts("train")
    f = d.flow[torch.from_numpy(starts)].float()
    vals = f[f.norm(dim=-1) > d.moving_threshold]
    assert d.flow_std(starts) == pytest.approx(float(vals.std()), rel=1e-4)
    model = SkillAutoencoder(cfg)
    model.scale.fill_(d.flow_std(starts))
    state = model.state_dict()
    assert float(state["scale"]) == pytest.approx(d.flow_std(starts))
    again = SkillAutoencoder(cfg)
    again.load_state_dict(state)
    assert float(again.scale) == pytest.approx(float(model.scale))
    v1 = SkillAutoencoder(SkillConfig(flow_res=16, image_res=16, width=8))
    assert "scale" not in v1.state_dict()


def test_weighted_flow_loss_weighs_moving_pixels():
    from sof_ros.skills.model import weighted_flow_loss

    target = torch.zeros(1, 1, 10, 10, 2)
    target[0, 0, 0, 0] = 5.0  # one moving pixel of 100
    pred = torch.zeros_like(target)
    moving = target.norm(dim=-1) > 0.5
    plain = weighted_flow_loss(pred, target, torch.tensor(1.0), moving, 0.0)
    weighted = weighted_flow_loss(pred, target, torch.tensor(1.0), moving, 99.0)
    assert float(weighted) == pytest.approx(float(plain) * 100 / 1.99, rel=1e-4)  # 100/(1 + 0.99) times larger


def test_plan_only_head_reads_the_plan_not_the_image():
    from sof_ros.flow2action.learned import Flow2ActionNet

    skill = SkillConfig(segment=4, stride=2, flow_res=16, image_res=16)
    cfg = Flow2ActionConfig(width=8, pool="flatten", chunk=6)
    torch.manual_seed(0)
    plan_only, full = Flow2ActionNet(cfg, skill, use_image=False), Flow2ActionNet(cfg, skill)
    plan = torch.randn(2, 4, 16, 16, 2)
    prop = torch.randn(2, 4)
    img_a = torch.randint(0, 255, (2, 16, 16, 3), dtype=torch.uint8)
    img_b = torch.randint(0, 255, (2, 16, 16, 3), dtype=torch.uint8)
    with torch.no_grad():
        out = plan_only(plan, img_a, prop)
        assert out.shape == (2, 6, 4)
        assert torch.equal(out, plan_only(plan, img_b, prop))
        assert not torch.allclose(out, plan_only(plan * 2, img_a, prop))
        assert not torch.allclose(full(plan, img_a, prop), full(plan, img_b, prop))


def test_keypoint_pool_locates_a_peak_between_cells_and_the_head_trains():
    """f2a.pool keypoints: a spatial softmax's expected position moves with the feature's peak, at a
    finer step than the map's cells, and the head built on it learns (its loss falls)."""
    from sof_ros.flow2action.learned import KEYPOINTS, Flow2ActionNet, SpatialSoftmax

    ss = SpatialSoftmax(1, 1)
    with torch.no_grad():
        ss.maps.weight.fill_(1.0)
        ss.maps.bias.zero_()
    x = torch.full((1, 1, 16, 16), -30.0)
    x[0, 0, 4, 12] = 30.0
    assert torch.allclose(ss(x), torch.tensor([[-1 + 12 * 2 / 15, -1 + 4 * 2 / 15]]), atol=1e-4)
    x[0, 0, 4, 13] = 30.0  # two equal peaks: half way between them
    assert torch.allclose(ss(x)[0, 0], torch.tensor(-1 + 12.5 * 2 / 15), atol=1e-4)

    skill = SkillConfig(segment=4, stride=2, flow_res=16, image_res=16)
    torch.manual_seed(0)
    net = Flow2ActionNet(Flow2ActionConfig(width=8, pool="keypoints", chunk=6), skill)
    assert net.head.keypoints.maps.out_channels == KEYPOINTS
    plan, img, prop = torch.randn(8, 4, 16, 16, 2), torch.randint(0, 255, (8, 16, 16, 3), dtype=torch.uint8), torch.randn(8, 4)
    target = torch.rand(8, 6, 4) * 1.6 - 0.8
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    losses = []
    for _ in range(60):
        loss = F.mse_loss(net(plan, img, prop), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.3 * losses[0], losses[::10]


def test_random_shift_moves_image_and_plan_together():
    from sof_ros.flow2action.learned import random_shift

    img = torch.zeros(8, 32, 32, 3, dtype=torch.uint8)
    img[:, 16:18, 10:12] = 255  # a 2x2 bright block = one plan cell at half the resolution
    plan = torch.zeros(8, 3, 16, 16, 2)
    plan[:, :, 8, 5] = 1.0
    torch.manual_seed(0)
    img2, plan2 = random_shift(img, plan, 2)
    moved = False
    for b in range(8):
        ys, xs = np.nonzero(plan2[b, 0, :, :, 0].numpy())
        iy, ix = np.nonzero(img2[b, :, :, 0].numpy())
        assert len(ys) == 1 and iy.min() == 2 * ys[0] and ix.min() == 2 * xs[0]
        assert torch.equal(plan2[b, 1], plan2[b, 0])  # every step of the plan moves alike
        moved |= (ys[0], xs[0]) != (8, 5)
    assert moved


def test_top_k_one_sampling_is_greedy():
    from sof_ros.config import PolicyConfig
    from sof_ros.policy.model import SkillPolicy

    skill = SkillConfig(flow_res=16, image_res=16, tokens_per_segment=3)
    torch.manual_seed(0)
    pol = SkillPolicy(PolicyConfig(d_model=32, layers=1, heads=2, use_proprio=True), skill, 50).eval()
    img = torch.randint(0, 255, (4, 16, 16, 3), dtype=torch.uint8)
    text, prop = torch.randn(4, 384), torch.randn(4, 4)
    greedy = pol.generate(img, text, prop)
    assert torch.equal(pol.generate(img, text, prop, temperature=1.0, top_k=1), greedy)
    with pytest.raises(ValueError, match="proprio"):
        pol.generate(img, text)


def test_generation_with_cached_keys_and_values_matches_rerunning_the_whole_sequence():
    """generate() runs each new token through the blocks alone, with the keys and values of the
    positions before it kept: every step's logits must be those of the teacher-forced `_run` over
    the whole sequence (the module the checkpoint was trained with), greedy and sampled."""
    from sof_ros.config import PolicyConfig
    from sof_ros.policy.model import SkillPolicy

    skill = SkillConfig(flow_res=16, image_res=16, tokens_per_segment=5)
    torch.manual_seed(1)
    pol = SkillPolicy(PolicyConfig(d_model=32, layers=3, heads=4, use_proprio=True), skill, 40).eval()
    img = torch.randint(0, 255, (6, 16, 16, 3), dtype=torch.uint8)
    text, prop = torch.randn(6, 384), torch.randn(6, 4)
    with torch.no_grad():
        for temperature in (0.0, 1.5):
            torch.manual_seed(2)
            tokens = pol.generate(img, text, prop, temperature=temperature)
            full = pol._run(pol._prefix(img, text, prop), tokens)  # logits of token_1..n, all at once
            torch.manual_seed(2)
            prefix, cached = pol._prefix(img, text, prop), []
            x, cache = pol._extend(torch.cat([prefix, pol.tok_emb(torch.full((6, 1), 40))], 1)
                                   + pol.pos[:, : prefix.shape[1] + 1], None)
            cached.append(pol.head(pol.norm(x[:, -1])))
            for i in range(skill.tokens_per_segment - 1):
                x, cache = pol._extend(pol.tok_emb(tokens[:, i: i + 1]) + pol.pos[:, prefix.shape[1] + 1 + i][:, None], cache)
                cached.append(pol.head(pol.norm(x[:, -1])))
            torch.testing.assert_close(torch.stack(cached, 1), full[:, : skill.tokens_per_segment], atol=1e-5, rtol=1e-4)
            if temperature == 0.0:
                assert torch.equal(tokens, full[:, : skill.tokens_per_segment].argmax(-1))
    assert len(set(tokens.flatten().tolist())) > 1  # sampled: not a constant sequence


def test_temporal_ensembling_averages_overlapping_chunks():
    from sof_ros.policies.base import FlowPlan
    from sof_ros.policies.sof import CheckpointPolicy

    cfg = SofConfig()
    pol = CheckpointPolicy(cfg, {}, {}, replan_every=2)
    pol.reset()
    a = FlowPlan(np.zeros(0, np.int64), np.zeros((0, 1, 1, 2)), (1, 1), np.zeros((4, 4)))
    b = FlowPlan(np.zeros(0, np.int64), np.zeros((0, 1, 1, 2)), (1, 1), np.ones((4, 4)))
    assert pol.act(a, None, 0)[0] == 0 and pol.act(a, None, 1)[0] == 0  # ensembling off: the plan itself
    pol.ensemble = np.log(3.0)  # an older chunk weighs 1/3 of the next one
    pol.reset()
    pol.act(a, None, 0), pol.act(a, None, 1)
    x = pol.act(b, None, 0)  # steps 2: a (age 1 plan) and b overlap
    assert x[0] == pytest.approx(1 / (1 + 1 / 3))
    pol.act(b, None, 1)
    c = FlowPlan(np.zeros(0, np.int64), np.zeros((0, 1, 1, 2)), (1, 1), np.full((4, 4), 0.5))
    assert pol.act(c, None, 0)[0] == pytest.approx((0.5 + 1 / 3) / (1 + 1 / 3))  # a is over, b and c overlap


def test_token_sharing_has_a_chance_baseline():
    """Tokens that follow the task share nothing; the chance count (task labels of episodes shuffled)
    shows what sharing random labelling would give."""
    from types import SimpleNamespace

    from sof_ros.learn.data import EpisodeMeta
    from sof_ros.train import token_sharing

    eps, toks, start = [], [], 0
    for k in range(12):
        task = "ab"[k % 2]
        eps.append(EpisodeMeta(task, task, 5, False, False, start))
        toks += [[k % 2 * 10 + (k // 2) % 3]] * 5  # task a: ids 0-2, task b: ids 10-12
        start += 5
    d = SimpleNamespace(episodes=eps, tokens=torch.tensor(toks))
    out = token_sharing(d)
    assert out["first_token_ids_used"] == 6 and out["shared_across_tasks"] == 0
    assert out["chance_shared_across_tasks"] > 2


def test_segment_cache_reloads_the_same_tensors(tmp_path):
    from sof_ros.learn.data import SegmentData

    ds = _strided_dataset(tmp_path)
    cfg = SkillConfig(segment=3, stride=2, flow_res=SIZE, image_res=SIZE)
    a = SegmentData(str(ds.root), cfg, val_fraction=0.0, progress=False, cache=True)
    assert len(list((ds.root / ".cache").glob("segments_*.pt"))) == 1
    b = SegmentData(str(ds.root), cfg, val_fraction=0.0, progress=False, cache=True)
    for k in ("rgb", "flow", "actions", "proprio"):
        assert torch.equal(getattr(a, k), getattr(b, k)), k
    assert b.episodes == a.episodes and b.source_width == a.source_width
    c = SegmentData(str(ds.root), SkillConfig(segment=2, stride=2, flow_res=SIZE, image_res=SIZE), val_fraction=0.0,
                    progress=False, cache=True)  # another working layout: another cache file
    assert len(list((ds.root / ".cache").glob("segments_*.pt"))) == 2 and c.pad != a.pad


class _RunsCode:
    """A pickle that runs code when unpickled without weights_only (what a hostile cache file would hold)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_segment_cache_never_unpickles_code(tmp_path):
    """A dataset may arrive with its .cache: a cache file is read with weights_only, and one it refuses
    is rebuilt from the episodes, never executed."""
    from sof_ros.learn.data import SegmentData

    ds = _strided_dataset(tmp_path)
    cfg = SkillConfig(segment=3, stride=2, flow_res=SIZE, image_res=SIZE)
    a = SegmentData(str(ds.root), cfg, val_fraction=0.0, progress=False, cache=True)
    (cache,) = (ds.root / ".cache").glob("segments_*.pt")
    marker = tmp_path / "code_ran"
    torch.save({"episodes": _RunsCode(marker)}, cache)
    b = SegmentData(str(ds.root), cfg, val_fraction=0.0, progress=False, cache=True)
    assert not marker.exists()
    assert b.episodes == a.episodes and torch.equal(b.flow, a.flow)


def test_multi_camera_collection_gives_each_camera_its_own_seeds(tmp_path):
    """sof-collect --cameras A B: camera i uses seeds seed + i*N + k; collecting one camera alone with
    --camera-index i gives the same episodes; depth off records RGB + proprioception only."""
    import h5py

    from sof_ros.config import SimConfig
    from sof_ros.data.collect import collect, main

    sim = SimConfig(max_steps=4, antialias=False)
    collect(str(tmp_path / "both"), ["button-press"], 2, 0, sim, act_fraction=0.5, camera=["corner", "corner3"],
            progress=False, depth=False)
    eps = Dataset(tmp_path / "both").episodes()
    attrs = []
    for e in eps:
        with h5py.File(e.path) as f:
            attrs.append((str(f.attrs["camera"]), int(f.attrs["seed"]), bool(f.attrs["in_d_act"])))
            assert "rgb" in f and "ee_pos" in f and "depth" not in f and "seg" not in f
    assert attrs == [("corner", 0, True), ("corner", 1, False), ("corner3", 2, True), ("corner3", 3, False)]
    cfg = tmp_path / "c.yaml"
    cfg.write_text("sim: {max_steps: 4, antialias: false}\ncollect: {depth: false, act_fraction: 0.5}\n")
    main(["--out", str(tmp_path / "one"), "--config", str(cfg), "--tasks", "button-press", "--episodes", "2",
          "--cameras", "corner3", "--camera-index", "1"])
    one = Dataset(tmp_path / "one").episodes()
    a = Dataset(tmp_path / "both").load(eps[3].path, ("rgb", "ee_pos"))
    b = Dataset(tmp_path / "one").load(one[1].path, ("rgb", "ee_pos"))
    assert np.array_equal(a["rgb"], b["rgb"]) and np.allclose(a["ee_pos"], b["ee_pos"])
    # the other camera's process writes into the same dataset, in its own block of episode numbers
    main(["--out", str(tmp_path / "one"), "--config", str(cfg), "--tasks", "button-press", "--episodes", "2",
          "--cameras", "corner", "--camera-index", "0"])
    shared = Dataset(tmp_path / "one").episodes()
    assert [(e.index, e.camera) for e in shared] == [(0, "corner"), (1, "corner"), (100000, "corner3"),
                                                      (100001, "corner3")]
    # so does a process collecting another task, in the block it is given
    main(["--out", str(tmp_path / "one"), "--config", str(cfg), "--tasks", "door-open", "--episodes", "1",
          "--cameras", "corner", "--block", "2"])
    assert [(e.index, e.task) for e in Dataset(tmp_path / "one").episodes()][-1] == (200000, "door-open")
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "one"), "--config", str(cfg), "--tasks", "door-open", "--episodes", "1",
              "--cameras", "corner", "--camera-index", "0", "--block", "2"])
    for bad in (-1, 10):  # a negative or seventh-digit episode number would sort out of order
        with pytest.raises(DatasetError, match="--camera-index and --block take 0 to 9"):
            Dataset(tmp_path / "one").next_index(bad)


def test_a_task_collected_alone_gives_the_episodes_of_a_joint_collection(tmp_path):
    """`sof-collect --tasks A B` in one process and `--tasks B --block 1` in another give B the same
    episodes: the expert's action noise comes from each episode's task and seed, not from a
    generator that runs on from the tasks collected before it."""
    from sof_ros.config import SimConfig
    from sof_ros.data.collect import collect

    sim = SimConfig(max_steps=30, antialias=False)
    collect(str(tmp_path / "joint"), ["button-press", "handle-press"], 1, 0, sim, act_fraction=1.0, progress=False,
            depth=False)
    collect(str(tmp_path / "alone"), ["handle-press"], 1, 0, sim, act_fraction=1.0, progress=False, depth=False,
            index_block=1)
    joint, alone = Dataset(tmp_path / "joint"), Dataset(tmp_path / "alone")
    (in_joint,) = [e for e in joint.episodes() if e.task == "handle-press"]
    (in_alone,) = alone.episodes()
    a, b = joint.load_actions(in_joint.path), alone.load_actions(in_alone.path)
    assert a.shape == (30, 4) and (np.abs(a[:, :3]) < 1).sum() > 10  # not clipped: the noise shows
    np.testing.assert_array_equal(a, b)


def test_action_stages_reuse_saved_tokens(tmp_path):
    """Tokens encoded once are saved beside the Stage-1 weights and reused by a later process; new
    weights (another fingerprint) are re-encoded."""
    from sof_ros.config import load_config
    from sof_ros.train import Trainer

    ds = _strided_dataset(tmp_path, t=20)
    cfg = load_config("config/tiny.yaml")
    cfg.train.dataset, cfg.train.out, cfg.train.skill_steps = str(ds.root), str(tmp_path / "out"), 3
    first = Trainer(cfg, progress=False)
    first.train_skill()
    assert (tmp_path / "out" / "skill_tokens.pt").is_file()
    second = Trainer(cfg, progress=False)
    calls = []
    second.encode_tokens = lambda space="flow": calls.append(space)
    assert torch.equal(second._ensure_tokens("flow"), first.data.tokens) and calls == []
    import os

    os.utime(tmp_path / "out" / "skill.pt", ns=(1, 1))  # other weights: the saved tokens do not fit them
    third = Trainer(cfg, progress=False)
    third.encode_tokens = lambda space="flow": calls.append(space)
    third._ensure_tokens("flow")
    assert calls == ["flow"]


def test_train_speed_bench_times_every_stage_in_steady_state(tmp_path):
    """sof-bench train: seconds per step from the clock in the training history, after the warm-up
    steps, for each stage asked; the results file names the device and the dataset's size."""
    import json

    import yaml

    from sof_ros.bench.cli import main as bench
    from sof_ros.bench.train_speed import steady_seconds_per_step
    from sof_ros.errors import SofError

    hist = [{"step": 5, "wall_s": 9.0}, {"step": 10, "wall_s": 10.0}, {"step": 20, "wall_s": 12.0}]
    assert steady_seconds_per_step(hist, warmup=10) == pytest.approx(0.2)  # the 9 s of start-up left out
    with pytest.raises(SofError, match="warm-up"):
        steady_seconds_per_step(hist, warmup=20)
    ds = _strided_dataset(tmp_path, t=20)
    cfg = yaml.safe_load(open("config/tiny.yaml"))
    cfg["train"]["val_fraction"] = 0.0
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "speed.json"
    bench(["train", "--config", str(tmp_path / "tiny.yaml"), "--dataset", str(ds.root), "--stages", "skill", "bc",
           "--steps", "15", "--warmup", "5", "--out", str(out)])
    r = json.loads(out.read_text())
    assert list(r["stages"]) == ["skill", "bc"] and r["device"] == "cpu" and r["dataset"]["episodes"] == 1
    for stage, v in r["stages"].items():
        assert v["seconds_per_step"] > 0 and v["stage_wall_s"] >= 10 * v["seconds_per_step"], stage
        assert v["projected_optimiser_s_at_config_steps"] == pytest.approx(  # written to 0.1 s
            v["seconds_per_step"] * v["config_steps"], rel=0.01, abs=0.06)
    assert r["stages"]["skill"]["config_steps"] == cfg["train"]["skill_steps"]
    assert "| skill |" in out.with_suffix(".md").read_text()


def test_learning_free_row_replays_its_sampled_replans_after_a_reset():
    """After a stall the learning-free row samples its next plan (temperature 1). The samples come
    from the policy's own stream, re-seeded at reset: the same episode gives the same plans, so two
    runs of a row can be compared episode for episode (they could not when it drew from torch's
    global stream)."""
    from sof_ros.policies import load_policy
    from sof_ros.policies.base import AgentInput

    policy = load_policy("sof_learning_free", str(pathlib.Path(__file__).resolve().parents[1] / "models" / "sof_metaworld"))
    obs = AgentInput(rgb=np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8))
    instruction = policy.instructions[0]

    def episode():
        policy.reset()
        tokens = []
        for _ in range(4):
            policy.solver.needs_replan = True  # as after a stall
            tokens.append(policy.plan(obs, instruction).tokens.tolist())
        return tokens

    first = episode()
    torch.manual_seed(123)  # torch's global stream moved on: no influence
    assert episode() == first
    assert len({tuple(t) for t in first}) > 1  # sampled, not greedy: the plans differ within an episode
