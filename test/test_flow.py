"""Optical flow: estimators on known shifts, simulator ground truth (camera conventions and
photometric consistency), `sof-flow` extraction (round trip, resume, crash safety, viz),
`sof-import-videos`, and clear errors."""
import shutil

import cv2
import h5py
import numpy as np
import pytest

from sof_ros.config import SimConfig
from sof_ros.data.dataset import Dataset
from sof_ros.errors import DatasetError, SofError
from sof_ros.flow.estimators import make_estimator

MOVING_PX = 0.5  # GT magnitude above which a pixel counts as moving (same as sof-bench flow)


@pytest.fixture(scope="module")
def sim_dataset(tmp_path_factory):
    """Two short noise-free expert episodes at 128x128, collected once for the module."""
    from sof_ros.data.collect import collect

    root = tmp_path_factory.mktemp("flow") / "ds"
    collect(str(root), ["button-press", "door-open"], episodes_per_task=1, seed=0,
            sim=SimConfig(max_steps=24), act_fraction=1.0, noise=0.0, progress=False)
    return root


def _textured(rng, size=200):
    img = cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3)).astype(np.uint8), (0, 0), 2.0)
    return cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX)


@pytest.mark.parametrize("dx,dy", [(3, -2), (1, 1), (5, 4)])
def test_dis_recovers_known_shift(dx, dy):
    big = _textured(np.random.default_rng(0))
    y0 = x0 = 36
    f0 = big[y0:y0 + 128, x0:x0 + 128]
    f1 = big[y0 - dy:y0 - dy + 128, x0 - dx:x0 - dx + 128]  # content at p in f0 is at p + (dx, dy) in f1
    flow = make_estimator("dis")(f0, f1)
    assert flow.shape == (128, 128, 2) and flow.dtype == np.float32
    epe = np.linalg.norm(flow[8:-8, 8:-8] - np.array([dx, dy]), axis=-1).mean()  # border: content enters
    # measured 0.016-0.019 px for these shifts (DIS medium, OpenCV 5.0); bound with ~5x margin
    assert epe < 0.1, epe
    far = make_estimator("farneback")(f0, f1)
    assert np.linalg.norm(far[8:-8, 8:-8] - np.array([dx, dy]), axis=-1).mean() < 0.1  # measured <= 0.008


def test_projection_convention_matches_renderer():
    """Back-projected seg pixels lie on their geom; projected geom/body centres land on their geom."""
    from sof_ros.sim.metaworld_env import MetaWorldArm  # first: it selects the headless GL backend

    import mujoco  # noqa: I001

    from sof_ros.geometry import depth_to_world, world_to_pixel

    arm = MetaWorldArm("door-open")
    try:
        obs = arm.reset(0)
        m, d = arm.model, arm.data
        gb = arm.geom_body_ids()
        K, pose, seg, depth = obs.intrinsics, obs.cam_pose, obs.seg, obs.depth
        assert np.allclose(K[:2, 2], [(128 - 1) / 2, (128 - 1) / 2])
        # 1) every seg pixel, lifted with depth/K/pose, lies within its geom's bounding sphere
        mask = seg >= 0
        g = seg[mask]
        pts = depth_to_world(K, pose, depth)[mask]
        has_bound = m.geom_rbound[g] > 0  # planes have rbound 0
        inside = np.linalg.norm(pts - d.geom_xpos[g], axis=1) <= 1.01 * m.geom_rbound[g] + 1e-3
        assert inside[has_bound].mean() > 0.995, inside[has_bound].mean()  # measured 1.0
        mirrored = K.copy()
        mirrored[:2, :2] *= -1  # an image flipped by 180 degrees: must clearly fail the same check
        pts_m = depth_to_world(mirrored, pose, depth)[mask]
        inside_m = np.linalg.norm(pts_m - d.geom_xpos[g], axis=1) <= 1.01 * m.geom_rbound[g] + 1e-3
        assert inside_m[has_bound].mean() < 0.6, inside_m[has_bound].mean()  # measured 0.41
        # 2) centres of visible primitive geoms project onto that geom, unless something is in front
        prim = {int(t) for t in (mujoco.mjtGeom.mjGEOM_SPHERE, mujoco.mjtGeom.mjGEOM_CAPSULE,
                                 mujoco.mjtGeom.mjGEOM_BOX, mujoco.mjtGeom.mjGEOM_CYLINDER,
                                 mujoco.mjtGeom.mjGEOM_ELLIPSOID)}
        hits = 0
        for gid in np.unique(g):
            if int(m.geom_type[gid]) not in prim:
                continue
            uv, z = world_to_pixel(K, pose, d.geom_xpos[gid][None])
            u, v = int(round(uv[0, 0])), int(round(uv[0, 1]))
            if 0 <= u < 128 and 0 <= v < 128:
                assert seg[v, u] == gid or depth[v, u] < z[0], f"geom {gid} centre lands on {seg[v, u]}"
                hits += seg[v, u] == gid
        assert hits >= 5  # measured 8 of 11 (3 hidden behind other geoms)
        # 3) body origins: the pixel a body's position projects to shows that body's geom
        body_hits = 0
        for b in np.unique(gb[g]):
            uv, _ = world_to_pixel(K, pose, obs.body_pos[b][None])
            u, v = int(round(uv[0, 0])), int(round(uv[0, 1]))
            if b > 0 and 0 <= u < 128 and 0 <= v < 128 and seg[v, u] >= 0:
                body_hits += gb[seg[v, u]] == b
        assert body_hits >= 4  # measured 6 (others are occluded or have their origin off the geometry)
    finally:
        arm.close()


def test_gt_flow_warps_frame_onto_next(sim_dataset):
    """Sampling frame t+1 at p + F_gt(p) (bilinear, cv2.remap) must reproduce frame t on moving pixels.

    Backward sampling of t+1 rather than forward splatting of t: it needs no hole filling or
    z-buffer, and it tests exactly the GT correspondence p -> p + F(p).
    """
    from sof_ros.flow.gt_flow import episode_gt_flow

    ds = Dataset(sim_dataset)
    for path in ds.episode_paths():
        flow, valid = episode_gt_flow(ds, path)
        arr = ds.load(path, ("rgb", "seg"))
        rgb, seg = arr["rgb"].astype(np.float32), arr["seg"]
        assert flow.shape == (len(rgb) - 1, 128, 128, 2) and flow.dtype == np.float32
        assert not valid[seg[:-1] < 0].any(), "background must never be valid"
        assert valid.sum() > 0.95 * (seg[:-1] >= 0).sum()  # measured 0.994 / 0.998: few occluded/out of view
        grid = np.stack(np.meshgrid(np.arange(128), np.arange(128)), -1).astype(np.float32)
        err_gt, err_zero = [], []
        for t in range(len(flow)):
            moving = valid[t] & (np.linalg.norm(flow[t], axis=-1) > MOVING_PX)
            if not moving.any():
                continue
            m = grid + flow[t]
            warped = cv2.remap(rgb[t + 1], m[..., 0], m[..., 1], cv2.INTER_LINEAR)
            err_gt.append(np.abs(warped - rgb[t]).mean(-1)[moving])
            err_zero.append(np.abs(rgb[t + 1] - rgb[t]).mean(-1)[moving])
        err_gt, err_zero = np.concatenate(err_gt), np.concatenate(err_zero)
        assert len(err_gt) > 500, len(err_gt)
        # measured (mean abs grey level of 255, ~22k moving px each): GT 4.06 / 4.47 vs zero flow
        # 7.66 / 7.95 on these two episodes; the residual is bilinear resampling of 128 px textures,
        # mixed pixels at object edges and shading changes
        assert err_gt.mean() < 6.5, (path.name, err_gt.mean(), err_zero.mean())
        assert err_gt.mean() < 0.75 * err_zero.mean(), (path.name, err_gt.mean(), err_zero.mean())


def test_episode_gt_flow_needs_sim_data(tmp_path):
    from sof_ros.flow.gt_flow import episode_gt_flow

    ds = Dataset.create(tmp_path / "v")
    path = ds.write_episode(0, dict(task="t", instruction="i", source="video", success=True),
                            {"rgb": np.zeros((3, 16, 16, 3), np.uint8)})
    with pytest.raises(DatasetError, match="ground-truth flow needs a simulated episode"):
        episode_gt_flow(ds, path)


def test_extract_round_trip_resume_and_crash_safety(sim_dataset, tmp_path, monkeypatch):
    from sof_ros.flow import extract

    root = tmp_path / "ds"
    shutil.copytree(sim_dataset, root)
    ds = Dataset(root)
    paths = ds.episode_paths()
    before = {p: p.read_bytes() for p in paths}

    # crash while replacing the first episode: the original stays byte-identical, no temp file is left
    def boom(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(extract.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        extract.extract_dataset(root, "dis", workers=1, progress=False)
    monkeypatch.undo()
    assert paths[0].read_bytes() == before[paths[0]]
    assert not list((root / "episodes").glob("*.tmp"))

    # an estimator failure on the second episode: the first is done, the second untouched
    real = extract.estimate_episode
    calls = []

    def flaky(rgb, est, gap=1):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("estimator crashed")
        return real(rgb, est, gap)

    monkeypatch.setattr(extract, "estimate_episode", flaky)
    with pytest.raises(RuntimeError, match="estimator crashed"):
        extract.extract_dataset(root, "dis", workers=1, progress=False)
    monkeypatch.undo()
    with h5py.File(paths[0]) as f0, h5py.File(paths[1]) as f1:
        assert "flow/dis" in f0 and "flow" not in f1

    # resume: only the missing episode is computed
    s = extract.extract_dataset(root, "dis", workers=1, progress=False)
    assert (s["extracted"], s["skipped"], s["estimator"]) == (1, 1, "dis")
    Dataset(root, validate=True)
    est = make_estimator("dis")
    for p in paths:
        arr = ds.load(p, ("rgb", "flow/dis", "depth"))
        t = len(arr["rgb"])
        assert arr["flow/dis"].shape == (t - 1, 128, 128, 2) and arr["flow/dis"].dtype == np.float16
        direct = est(arr["rgb"][3], arr["rgb"][4])
        np.testing.assert_allclose(arr["flow/dis"][3].astype(np.float32), direct, atol=0.01)
        with h5py.File(p) as f:
            assert f["flow/dis"].chunks == (1, 128, 128, 2) and f["flow/dis"].compression == "gzip"
        np.testing.assert_array_equal(arr["depth"], Dataset(sim_dataset).load(sim_dataset / "episodes" / p.name,
                                                                             ("depth",))["depth"])
    stamp = [p.stat().st_mtime_ns for p in paths]
    s = extract.extract_dataset(root, "dis", workers=1, progress=False)
    assert (s["extracted"], s["skipped"]) == (0, 2)
    assert [p.stat().st_mtime_ns for p in paths] == stamp  # skipped means not rewritten

    # a second estimator in 2 worker processes, with visualisations; flow/dis is kept
    viz = tmp_path / "viz"
    s = extract.extract_dataset(root, "farneback", workers=2, viz_dir=viz, progress=False)
    assert s["extracted"] == 2
    with h5py.File(paths[0]) as f:
        assert set(f["flow"]) == {"dis", "farneback"}
    strips = sorted(viz.glob("*_strip.png"))
    assert len(strips) == 2 and cv2.imread(str(strips[0])) is not None
    assert list(viz.glob("ep_000000_*_farneback/color_t000.png")) and list(viz.glob("ep_000000_*/arrows_t000.png"))
    s = extract.extract_dataset(root, "dis", workers=1, progress=False, force=True)
    assert s["extracted"] == 2


def test_extract_cli_errors(tmp_path, capsys):
    from sof_ros.flow.extract import main

    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "nope")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "no dataset.json" in err and "Traceback" not in err


def test_viz_images():
    from sof_ros.flow.viz import episode_strip, flow_arrows, flow_to_color

    flow = np.zeros((32, 48, 2), np.float32)
    flow[..., 0] = 2.0  # rightwards
    col = flow_to_color(flow)
    assert col.shape == (32, 48, 3) and col.dtype == np.uint8
    assert (flow_to_color(np.zeros_like(flow)) == 255).all()  # no motion = white
    assert col[0, 0, 0] > max(col[0, 0, 1], col[0, 0, 2])  # Middlebury key: +x (right) is red
    assert flow_to_color(-flow)[0, 0, 0] < flow_to_color(-flow)[0, 0, 2]  # -x (left) is cyan/blue
    assert not np.array_equal(flow_arrows(np.zeros((32, 48, 3), np.uint8), flow, step=8), np.zeros((32, 48, 3)))
    strip = episode_strip(np.zeros((5, 32, 48, 3), np.uint8), np.repeat(flow[None], 4, 0), every=2)
    assert strip.shape == (3 * 32 + 4, 2 * 48 + 2, 3)


def _write_video(path, frames=10, size=(160, 128)):
    import imageio

    w = imageio.get_writer(str(path), fps=10)
    for t in range(frames):
        img = np.zeros((size[1], size[0], 3), np.uint8)
        img[40:80, 10 + 6 * t:50 + 6 * t] = (255, 200, 50)
        w.append_data(img)
    w.close()


def test_video_import(tmp_path):
    from sof_ros.data.video_import import import_videos
    from sof_ros.flow.extract import extract_dataset

    vids = tmp_path / "videos"
    vids.mkdir()
    _write_video(vids / "push_left.mp4")
    _write_video(vids / "other.mp4", frames=6)
    (tmp_path / "map.json").write_text('{"push_left.mp4": "push the block", "other": '
                                       '{"instruction": "do it", "task": "task-b"}}')
    out = tmp_path / "ds"
    written = import_videos(vids, out, instructions=tmp_path / "map.json", size=(64, 48), stride=2, progress=False)
    assert len(written) == 2
    ds = Dataset(out, validate=True)
    infos = {i.task: i for i in ds.episodes()}
    assert set(infos) == {"push_left", "task-b"}
    assert infos["push_left"].instruction == "push the block" and infos["push_left"].source == "video"
    assert infos["push_left"].length == 5 and infos["task-b"].length == 3  # every 2nd of 10 / 6 frames
    arr = ds.load(infos["push_left"].path, ("rgb",))["rgb"]
    assert arr.shape == (5, 48, 64, 3) and arr.dtype == np.uint8
    with h5py.File(infos["push_left"].path) as f:
        assert "depth" not in f and "seg" not in f
    assert not ds.action_path(infos["push_left"].path).exists()
    assert import_videos(vids, out, instruction="x", progress=False) == []  # already imported: skipped
    s = extract_dataset(out, "dis", workers=1, progress=False)  # video datasets take flow like any other
    assert s["extracted"] == 2
    flow = ds.load(infos["push_left"].path, ("flow/dis",))["flow/dis"].astype(np.float32)
    # the square moves 12 px/step at 160 px -> 4.8 px at 64 px; it is at rows 15..30 (of 48)
    assert flow[0, 18:28, :, 0].max() > 2.0


def test_video_import_errors(tmp_path):
    from sof_ros.data.video_import import import_videos

    vids = tmp_path / "videos"
    vids.mkdir()
    with pytest.raises(SofError, match="no .mp4/.webm videos"):
        import_videos(vids, tmp_path / "ds", instruction="x")
    _write_video(vids / "a.mp4", frames=4)
    with pytest.raises(SofError, match="videos need an instruction"):
        import_videos(vids, tmp_path / "ds")
    (tmp_path / "map.csv").write_text("filename,instruction\nzzz.mp4,nothing\n")
    with pytest.raises(SofError, match="no instruction for 1 video"):
        import_videos(vids, tmp_path / "ds", instructions=tmp_path / "map.csv")
    (vids / "broken.webm").write_bytes(b"this is not a video")
    with pytest.raises(SofError, match="cannot read video .*broken.webm.*nothing was imported"):
        import_videos(vids, tmp_path / "ds", instruction="x")
    assert not (tmp_path / "ds").exists()


def test_estimator_errors(tmp_path):
    with pytest.raises(SofError, match="unknown flow estimator 'sparkle'; choose one of: dis"):
        make_estimator("sparkle")
    with pytest.raises(SofError, match="unknown DIS preset"):
        make_estimator("dis", preset="turbo")
    with pytest.raises(SofError, match="RAFT weights file .* not found; RAFT is never downloaded"):
        make_estimator("raft", weights_path=str(tmp_path / "raft.pth"))
    with pytest.raises(SofError, match="RAFT weights file"):
        make_estimator("raft")
    bogus = tmp_path / "bogus.pth"
    bogus.write_bytes(b"junk")
    # without torchvision: says to install it; with torchvision: says the file is not RAFT weights
    with pytest.raises(SofError, match="needs torchvision|cannot read RAFT weights"):
        make_estimator("raft", weights_path=str(bogus))
    assert make_estimator("dis_fast").name == "dis_fast" and make_estimator("dis").name == "dis"


def test_raft_wrapper_with_stub_torchvision(tmp_path, monkeypatch):
    """torchvision is not installable here, so a stub stands in for its RAFT builders: this checks
    our side (local weights only, large/small detection, [-1, 1] input, pad to /8 and crop back)."""
    import sys
    import types

    import torch

    seen = {}

    class StubRaft(torch.nn.Module):
        def __init__(self, pname):
            super().__init__()
            self.register_parameter(pname, torch.nn.Parameter(torch.zeros(())))
            self.pname = pname

        def forward(self, img1, img2, num_flow_updates=12):
            assert img1.shape[-2] % 8 == 0 and img1.shape[-1] % 8 == 0, "RAFT needs sides divisible by 8"
            seen.update(lo=float(img1.min()), hi=float(img1.max()), updates=num_flow_updates)
            out = torch.zeros(img1.shape[0], 2, *img1.shape[-2:])
            out[:, 0] = getattr(self, self.pname)
            out[:, 1] = -1.0
            return [out * 0, out]

    mod = types.ModuleType("torchvision.models.optical_flow")
    mod.raft_large = lambda weights=None: StubRaft("large_w")
    mod.raft_small = lambda weights=None: StubRaft("small_w")
    monkeypatch.setitem(sys.modules, "torchvision", types.ModuleType("torchvision"))
    monkeypatch.setitem(sys.modules, "torchvision.models", types.ModuleType("torchvision.models"))
    monkeypatch.setitem(sys.modules, "torchvision.models.optical_flow", mod)
    weights = tmp_path / "raft_small.pth"
    torch.save({"small_w": torch.tensor(2.5)}, weights)
    est = make_estimator("raft", weights_path=str(weights))
    f0 = np.zeros((30, 45, 3), np.uint8)
    f1 = np.full((30, 45, 3), 255, np.uint8)
    f0[0, 0] = 255
    flow = est(f0, f1)
    assert est.name == "raft" and flow.shape == (30, 45, 2) and flow.dtype == np.float32
    assert np.allclose(flow[..., 0], 2.5) and np.allclose(flow[..., 1], -1.0)  # small model, last update
    assert seen["lo"] == -1.0 and seen["hi"] == 1.0
    torch.save({"other": torch.tensor(1.0)}, weights)
    with pytest.raises(SofError, match="does not hold torchvision raft_large or raft_small weights"):
        make_estimator("raft", weights_path=str(weights))
