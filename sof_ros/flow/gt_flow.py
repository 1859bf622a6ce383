"""Ground-truth optical flow from the simulator, to score estimators and to check flow conventions.

Every pixel of frame t that shows a geom is lifted to 3-D with its depth, attached rigidly to the
body that owns the geom, carried along with that body to frame t+k and projected with the camera
at t+k. Body poses are absolute, so a gap of k control steps needs only the poses at t and t+k
(what happens in between does not matter for where a surface point ends up). Pixels are valid
when they show a geom at t, land inside the image at t+k in front of the camera, and are not
hidden there (their depth at t+k agrees with the rendered depth at t+k within a tolerance).
Conventions are those of `sof_ros.geometry`: K in pixel-index coordinates (principal point
(W-1)/2, (H-1)/2), cam_pose camera-to-world with OpenCV axes, depth in metres along the optical axis.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from sof_ros.errors import DatasetError, SofError
from sof_ros.geometry import depth_to_world, world_to_pixel

GT_KEYS = ("depth", "seg", "intrinsics", "cam_pose", "sim/body_pos", "sim/body_mat", "sim/geom_body")


def gt_flow(depth0: np.ndarray, seg0: np.ndarray, K: np.ndarray, cam_pose0: np.ndarray, cam_pose1: np.ndarray,
            body_pos0: np.ndarray, body_mat0: np.ndarray, body_pos1: np.ndarray, body_mat1: np.ndarray,
            geom_body: np.ndarray, depth1: np.ndarray | None = None, abs_tol: float = 0.01,
            rel_tol: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """Flow (H, W, 2) float32 from frame t (index 0) to a later frame (index 1) and its valid mask (H, W) bool.

    The later frame may be any number of steps after t: pass its camera pose, body poses and depth.
    `depth1` enables the occlusion test: a point is hidden in the later frame when it lies more than
    abs_tol + rel_tol * depth behind the rendered surface at its landing pixel (the slack absorbs
    depth differences between neighbouring pixels on slanted surfaces).
    """
    h, w = depth0.shape
    seg0 = np.asarray(seg0)
    geom_body = np.asarray(geom_body)
    flow = np.zeros((h, w, 2), np.float32)
    valid = seg0 >= 0
    if not valid.any():
        return flow, valid
    if int(seg0.max()) >= len(geom_body):
        raise SofError(f"segmentation holds geom id {int(seg0.max())} but the scene has {len(geom_body)} geoms")
    ys, xs = np.nonzero(valid)
    pw = depth_to_world(K, cam_pose0, depth0)[ys, xs]
    body = geom_body[seg0[ys, xs]]
    # world -> body frame at t -> world at t+1:  p1 = R1 R0^T (p0 - x0) + x1
    local = np.einsum("nji,nj->ni", body_mat0[body], pw - body_pos0[body])
    pw1 = np.einsum("nij,nj->ni", body_mat1[body], local) + body_pos1[body]
    uv1, z1 = world_to_pixel(K, cam_pose1, pw1)
    ok = (z1 > 1e-6) & np.all(np.isfinite(uv1), -1)
    ok &= (uv1[:, 0] >= -0.5) & (uv1[:, 0] <= w - 0.5) & (uv1[:, 1] >= -0.5) & (uv1[:, 1] <= h - 0.5)
    if depth1 is not None:
        ui = np.clip(np.rint(np.nan_to_num(uv1[:, 0])), 0, w - 1).astype(int)
        vi = np.clip(np.rint(np.nan_to_num(uv1[:, 1])), 0, h - 1).astype(int)
        ok &= z1 <= depth1[vi, ui] + abs_tol + rel_tol * z1
    flow[ys, xs, 0] = uv1[:, 0] - xs
    flow[ys, xs, 1] = uv1[:, 1] - ys
    valid[ys[~ok], xs[~ok]] = False
    flow[~valid] = 0.0
    return flow, valid


def episode_gt_flow(dataset, episode_path: str | Path, gap: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """GT flow of a whole simulated episode from every frame t to t+gap:
    ((T-gap, H, W, 2) float32, (T-gap, H, W) bool valid).

    `dataset` is a `sof_ros.data.dataset.Dataset` (or its root path).
    """
    from sof_ros.data.dataset import Dataset

    ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
    episode_path = Path(episode_path)
    try:
        arr = ds.load(episode_path, GT_KEYS)
    except DatasetError as exc:
        raise DatasetError(f"{exc}; ground-truth flow needs a simulated episode with depth, seg, camera and "
                           "sim/ body poses, as written by `sof-collect`") from None
    return gt_flow_arrays(arr, gap)


def gt_flow_arrays(arr: dict, gap: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """GT flow from every frame t to t+gap of an episode given as a dict with the GT_KEYS arrays:
    ((T-gap, H, W, 2) float32, (T-gap, H, W) bool valid)."""
    t, h, w = arr["depth"].shape
    if not (isinstance(gap, (int, np.integer)) and gap >= 1):
        raise SofError(f"the frame gap must be a positive integer, got {gap!r}")
    n = max(t - gap, 0)
    flows = np.zeros((n, h, w, 2), np.float32)
    valid = np.zeros((n, h, w), bool)
    for i in range(n):
        flows[i], valid[i] = gt_flow_gap(arr, i, gap)
    return flows, valid


def gt_flow_gap(arr: dict, t: int, gap: int) -> tuple[np.ndarray, np.ndarray]:
    """GT flow from frame t to frame t+gap of an episode given as a dict with the GT_KEYS arrays."""
    j = t + gap
    if not 0 <= t < j < len(arr["depth"]):
        raise SofError(f"frames {t} and {j} are not both in an episode of {len(arr['depth'])} frames")
    return gt_flow(arr["depth"][t], arr["seg"][t], arr["intrinsics"], arr["cam_pose"][t], arr["cam_pose"][j],
                   arr["sim/body_pos"][t], arr["sim/body_mat"][t], arr["sim/body_pos"][j], arr["sim/body_mat"][j],
                   arr["sim/geom_body"], depth1=arr["depth"][j])
