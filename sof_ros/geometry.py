"""Camera geometry and flow resampling, in one place (NumPy; no ROS).

Conventions (those of `sof_ros.sim.metaworld_env`, the ROS camera_info and OpenCV):
* pixels (u, v) are pixel-index coordinates: pixel (0, 0)'s centre is at (0, 0), so a W x H
  MetaWorld camera has its principal point at ((W-1)/2, (H-1)/2);
* K is the 3x3 pinhole matrix [[fx, s, cx], [0, fy, cy], [0, 0, 1]] (skew s is 0 for MuJoCo and
  RealSense, kept for generality);
* camera frames have OpenCV axes (x right, y down, z forward), depth z is metres along the
  optical axis (not along the ray);
* cam_pose is the 4x4 camera-to-world (or camera-to-base) transform: X_world = R X_cam + t.

Flow fields are (..., H, W, 2) float pixels, x (column) then y (row). `resize_flow` resamples a
field to another grid and rescales the vectors to pixels of that grid (x by W'/W, y by H'/H).
"""
from __future__ import annotations

import numpy as np

from sof_ros.errors import SofError


def project(K: np.ndarray, X_cam: np.ndarray) -> np.ndarray:
    """Camera-frame points (..., 3) -> pixels (..., 2); points at z = 0 give inf/NaN (no warning)."""
    X_cam = np.asarray(X_cam)
    x, y, z = X_cam[..., 0], X_cam[..., 1], X_cam[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = K[0, 0] * x / z + K[0, 2]
        if K[0, 1] != 0:
            u = u + K[0, 1] * y / z
        return np.stack([u, K[1, 1] * y / z + K[1, 2]], axis=-1)


def backproject(K: np.ndarray, uv: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Pixels (..., 2) at optical-axis depths (...) -> camera-frame points (..., 3)."""
    uv = np.asarray(uv)
    z = np.asarray(z)
    y = (uv[..., 1] - K[1, 2]) / K[1, 1]
    du = uv[..., 0] - K[0, 2]
    if K[0, 1] != 0:
        du = du - K[0, 1] * y
    return np.stack([du / K[0, 0] * z, y * z, np.broadcast_to(z, y.shape)], axis=-1)


def camera_to_world(cam_pose: np.ndarray, X_cam: np.ndarray) -> np.ndarray:
    """Camera-frame points (..., 3) -> world (base) points with the camera-to-world pose."""
    return X_cam @ cam_pose[:3, :3].T + cam_pose[:3, 3]


def world_to_camera(cam_pose: np.ndarray, X_world: np.ndarray) -> np.ndarray:
    """World (base) points (..., 3) -> camera-frame points: R^T (X - t) for row vectors."""
    return (X_world - cam_pose[:3, 3]) @ cam_pose[:3, :3]


def pixel_grid(h: int, w: int) -> np.ndarray:
    """(h, w, 2) float64 pixel-index coordinates (u, v) of every pixel centre."""
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.stack([u, v], axis=-1)


def depth_to_world(K: np.ndarray, cam_pose: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """(H, W) depth image (m) -> (H, W, 3) world points of every pixel centre."""
    depth = np.asarray(depth, dtype=np.float64)
    return camera_to_world(cam_pose, backproject(K, pixel_grid(*depth.shape), depth))


def world_to_pixel(K: np.ndarray, cam_pose: np.ndarray, X_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points (..., 3) -> ((..., 2) pixels, (...) depth along the optical axis)."""
    X_cam = world_to_camera(cam_pose, X_world)
    return project(K, X_cam), X_cam[..., 2]


_INTERPOLATION = {"area": "INTER_AREA", "nearest": "INTER_NEAREST", "linear": "INTER_LINEAR"}


def resize_flow(flow: np.ndarray, size: int | tuple[int, int], interpolation: str = "area") -> np.ndarray:
    """(..., H, W, 2) flow in pixels -> (..., h, w, 2) float32 flow in pixels of the new grid.

    `size` is the side of a square grid or (h, w). Area interpolation (the default) averages the
    flow over each new cell, the downsampling the learner's working grid uses.
    """
    import cv2

    if interpolation not in _INTERPOLATION:
        raise SofError(f"interpolation must be one of {sorted(_INTERPOLATION)}, got {interpolation!r}")
    flow = np.asarray(flow)
    if flow.ndim < 3 or flow.shape[-1] != 2:
        raise SofError(f"flow must be (..., H, W, 2) pixels, got shape {flow.shape}")
    h, w = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    H, W = flow.shape[-3:-1]
    flat = flow.reshape(-1, H, W, 2).astype(np.float32)
    mode = getattr(cv2, _INTERPOLATION[interpolation])
    out = np.stack([cv2.resize(f, (w, h), interpolation=mode) for f in flat]) if len(flat) else \
        np.zeros((0, h, w, 2), np.float32)
    out[..., 0] *= w / W
    out[..., 1] *= h / H
    return out.reshape(*flow.shape[:-3], h, w, 2)


def scale_intrinsics(K: np.ndarray, size: tuple[int, int], new_size: tuple[int, int]) -> np.ndarray:
    """K of a (W, H) image -> K of the same image resized to new_size (W', H'), pixel-centre
    convention: u' = (u + 0.5) W'/W - 0.5, so cx' = (cx + 0.5) sx - 0.5 (fx, skew by sx; fy by sy)."""
    (w, h), (w2, h2) = size, new_size
    if min(w, h, w2, h2) <= 0:
        raise SofError(f"image sizes must be positive, got {size} -> {new_size}")
    sx, sy = w2 / w, h2 / h
    K2 = np.array(K, dtype=np.float64).reshape(3, 3).copy()
    K2[0, 0] *= sx
    K2[0, 1] *= sx
    K2[1, 1] *= sy
    K2[0, 2] = (K2[0, 2] + 0.5) * sx - 0.5
    K2[1, 2] = (K2[1, 2] + 0.5) * sy - 0.5
    return K2
