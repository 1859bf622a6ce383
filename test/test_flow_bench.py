"""`sof-bench flow` metrics on synthetic cases whose answer is known: buckets (moving, slow, fast,
static), pooled EPE beside the zero-flow baseline, and ground truth over a gap of k frames with
occlusion, without rendering anything."""
import numpy as np
import pytest

from sof_ros.bench.flow_bench import EpeSums, PairSet, accuracy, add_episode_pairs, bucket_masks
from sof_ros.errors import SofError
from sof_ros.flow.gt_flow import gt_flow_gap


def _field(mags):
    """(1, N, 2) GT flow along +x with the given magnitudes."""
    gt = np.zeros((1, len(mags), 2))
    gt[0, :, 0] = mags
    return gt


def test_buckets_and_zero_flow_baseline_on_a_known_field():
    mags = [0.0, 0.3, 0.5, 0.6, 2.0, 2.5, 4.0, 9.0]
    gt = _field(mags)
    valid = np.ones((1, len(mags)), bool)
    valid[0, -1] = False  # an occluded pixel: in no bucket, whatever its flow
    m = bucket_masks(gt, valid)
    assert m["static"][0].tolist() == [True, True, True, False, False, False, False, False]  # 0.5 is not moving
    assert m["moving"][0].tolist() == [False, False, False, True, True, True, True, False]
    assert m["slow"][0].tolist() == [False, False, False, True, True, False, False, False]  # 2.0 is slow
    assert m["fast"][0].tolist() == [False, False, False, False, False, True, True, False]
    est = gt.copy()
    est[0, :, 1] = [0.1, 0.1, 0.1, 0.2, 0.2, 1.0, 1.0, 0.0]  # errors across the motion, per pixel
    sums = EpeSums()
    sums.add(est, gt, valid)
    sums.add(np.zeros_like(gt), gt, valid)  # a second pair: the zero estimator, pooled with the first
    r = sums.result()
    assert r["pairs"] == 2 and r["moving_px"] == 8 and r["slow_px"] == 4 and r["static_px"] == 6
    assert r["epe_moving"] == pytest.approx((0.2 + 0.2 + 1.0 + 1.0 + 0.6 + 2.0 + 2.5 + 4.0) / 8)
    assert r["zero_flow_epe_moving"] == pytest.approx((0.6 + 2.0 + 2.5 + 4.0) / 4)
    assert r["epe_slow"] == pytest.approx((0.2 + 0.2 + 0.6 + 2.0) / 4)
    assert r["zero_flow_epe_slow"] == pytest.approx(1.3)
    assert r["zero_flow_epe_fast"] == pytest.approx(3.25)
    assert r["zero_flow_epe_static"] == pytest.approx(0.8 / 3)
    assert r["epe_all"] == pytest.approx((0.3 + 2.4 + 0.8 + 9.1) / 14)


def test_empty_buckets_are_none_and_shapes_must_match():
    sums = EpeSums()
    sums.add(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), np.ones((2, 2), bool))
    r = sums.result()
    assert r["epe_moving"] is None and r["zero_flow_epe_slow"] is None and r["epe_static"] == 0.0
    with pytest.raises(SofError, match="shape"):
        sums.add(np.zeros((2, 3, 2)), np.zeros((2, 2, 2)), np.ones((2, 2), bool))


FX = 100.0  # px; the sliding wall is 1 m away, so 1 cm of motion is 1 px
W = H = 32


def sliding_wall_episode(frames: int = 10, step_m: float = 0.01, post_from: int = 5):
    """Camera at the origin looking along world +z (identity pose) at a wall (geom 0, body 1) 1 m away
    that slides along +x by step_m per frame. From frame `post_from` on, a static post (geom 1, body 2)
    stands 0.5 m away in front of columns 20-23 (before, it is far out of view). Every visible wall
    point moves by frame gap * step_m * FX / 1 m px; a wall point that slides behind the post is
    occluded, which only the depth of the later frame can tell."""
    K = np.array([[FX, 0, (W - 1) / 2], [0, FX, (H - 1) / 2], [0, 0, 1]])
    depth = np.ones((frames, H, W))
    seg = np.zeros((frames, H, W), np.int32)
    depth[post_from:, :, 20:24], seg[post_from:, :, 20:24] = 0.5, 1
    body_pos = np.zeros((frames, 3, 3))
    body_pos[:, 1, 0] = step_m * np.arange(frames)
    body_pos[:post_from, 2, 0] = 100.0
    rgb = np.zeros((frames, H, W, 3), np.uint8)
    rgb[:, 0, 0, 0] = np.arange(frames)  # frame index, to check which frames are paired
    return {"rgb": rgb, "depth": depth, "seg": seg, "intrinsics": K,
            "cam_pose": np.repeat(np.eye(4)[None], frames, 0), "sim/body_pos": body_pos,
            "sim/body_mat": np.repeat(np.eye(3)[None, None], frames, 0).repeat(3, 1),
            "sim/geom_body": np.array([1, 2])}


@pytest.mark.parametrize("k", [1, 4, 8])
def test_gt_flow_over_a_gap_of_k_frames_moves_k_times_as_far_and_masks_occlusion(k):
    arr = sliding_wall_episode()
    t = 1  # no post at t; at t + k only for k >= 4
    flow, valid = gt_flow_gap(arr, t, k)
    assert (arr["seg"][t] == 0).all()
    u = np.arange(W)[None].repeat(H, 0)
    lands = u + k  # column a wall pixel lands on at frame t + k
    hidden = (lands >= 20) & (lands <= 23) & (t + k >= 5)
    gone = lands > W - 1 + 0.5
    assert not valid[hidden | gone].any()
    expect_valid = ~hidden & ~gone
    assert valid[expect_valid].all() and hidden.any() == (k >= 4)
    np.testing.assert_allclose(flow[expect_valid], [[k * 1.0, 0.0]] * int(expect_valid.sum()), atol=1e-9)
    assert not flow[~valid].any()
    flow, valid = gt_flow_gap(arr, 6, 2)  # the post itself: static and unoccluded, zero flow, valid
    post = arr["seg"][6] == 1
    assert valid[post].all() and np.abs(flow[post]).max() < 1e-9
    with pytest.raises(SofError, match="not both in an episode"):
        gt_flow_gap(arr, 5, 5)


def test_bench_pairs_frames_t_and_t_plus_k_with_their_gt_and_scores_them():
    arr = sliding_wall_episode(frames=10)
    sets = {1: PairSet(), 4: PairSet(), 8: PairSet()}
    add_episode_pairs(sets, arr, range(0, 9, 4), "wall")
    assert [len(sets[k]) for k in (1, 4, 8)] == [3, 2, 1]  # t = 0, 4, 8 of 10 frames: pairs past the end are dropped
    for k, pairs in sets.items():
        for f0, f1, gt in zip(pairs.frame0, pairs.frame1, pairs.gt):
            assert f1[0, 0, 0] - f0[0, 0, 0] == k
            assert gt[0, 0, 0] == pytest.approx(k)
    zero = accuracy(lambda a, b: np.zeros(a.shape[:2] + (2,), np.float32), sets[4])
    assert zero["epe_moving"] == pytest.approx(4.0) == zero["zero_flow_epe_moving"]
    assert zero["slow_px"] == 0 and zero["fast_px"] == zero["moving_px"] > 0
    perfect = accuracy(lambda a, b: np.full(a.shape[:2] + (2,), 0.0, np.float32) + [1.0, 0.0], sets[1])
    assert perfect["epe_slow"] == pytest.approx(0.0) and perfect["zero_flow_epe_slow"] == pytest.approx(1.0)
