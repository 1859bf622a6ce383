"""Ground-truth optical flow from the simulator, to score estimators and to check flow conventions.

Every pixel of frame t that shows a geom is lifted to 3-D with its depth, attached rigidly to the
body that owns the geom, carried along with that body to t+1 and projected with the camera at t+1.
Pixels are valid when they show a geom at t, land inside the image at t+1 in front of the camera,
and are not hidden there (their depth at t+1 agrees with the rendered depth within a tolerance).
Conventions are those of `sof_ros.sim.metaworld_env`: K in pixel-index coordinates (principal point
(W-1)/2, (H-1)/2), cam_pose camera-to-world with OpenCV axes, depth in metres along the optical axis.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from sof_ros.errors import DatasetError, SofError

GT_KEYS = ("depth", "seg", "intrinsics", "cam_pose", "sim/body_pos", "sim/body_mat", "sim/geom_body")


def backproject(depth: np.ndarray, K: np.ndarray, cam_pose: np.ndarray) -> np.ndarray:
    """(H, W) depth -> (H, W, 3) world points of every pixel centre."""
    h, w = depth.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    z = depth.astype(np.float64)
    pc = np.stack([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z], -1)
    return pc @ cam_pose[:3, :3].T + cam_pose[:3, 3]


def project(points: np.ndarray, K: np.ndarray, cam_pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., 3) world points -> ((..., 2) pixel (u, v), (...) depth along the optical axis)."""
    pc = (points - cam_pose[:3, 3]) @ cam_pose[:3, :3]  # R^T (p - t) for row vectors
    z = pc[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = np.stack([K[0, 0] * pc[..., 0] / z + K[0, 2], K[1, 1] * pc[..., 1] / z + K[1, 2]], -1)
    return uv, z


def gt_flow(depth0: np.ndarray, seg0: np.ndarray, K: np.ndarray, cam_pose0: np.ndarray, cam_pose1: np.ndarray,
            body_pos0: np.ndarray, body_mat0: np.ndarray, body_pos1: np.ndarray, body_mat1: np.ndarray,
            geom_body: np.ndarray, depth1: np.ndarray | None = None, abs_tol: float = 0.01,
            rel_tol: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """Flow (H, W, 2) float32 from frame t to t+1 and its valid mask (H, W) bool.

    `depth1` enables the occlusion test: a point is hidden at t+1 when it lies more than
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
    pw = backproject(depth0, K, cam_pose0)[ys, xs]
    body = geom_body[seg0[ys, xs]]
    # world -> body frame at t -> world at t+1:  p1 = R1 R0^T (p0 - x0) + x1
    local = np.einsum("nji,nj->ni", body_mat0[body], pw - body_pos0[body])
    pw1 = np.einsum("nij,nj->ni", body_mat1[body], local) + body_pos1[body]
    uv1, z1 = project(pw1, K, cam_pose1)
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


def episode_gt_flow(dataset, episode_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """GT flow of a whole simulated episode: ((T-1, H, W, 2) float32, (T-1, H, W) bool valid).

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
    return gt_flow_arrays(arr)


def gt_flow_arrays(arr: dict) -> tuple[np.ndarray, np.ndarray]:
    """GT flow for every consecutive pair of an episode given as a dict with the GT_KEYS arrays."""
    depth, seg = arr["depth"], arr["seg"]
    t, h, w = depth.shape
    flows = np.zeros((t - 1, h, w, 2), np.float32)
    valid = np.zeros((t - 1, h, w), bool)
    for i in range(t - 1):
        flows[i], valid[i] = gt_flow(depth[i], seg[i], arr["intrinsics"], arr["cam_pose"][i], arr["cam_pose"][i + 1],
                                     arr["sim/body_pos"][i], arr["sim/body_mat"][i], arr["sim/body_pos"][i + 1],
                                     arr["sim/body_mat"][i + 1], arr["sim/geom_body"], depth1=depth[i + 1])
    return flows, valid
