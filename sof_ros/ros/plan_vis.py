"""Flow-plan geometry for visualisation (pure NumPy + OpenCV): point tracks through the plan, the
rgb8 overlay and 3-D arrow end points for RViz markers (camera model: sof_ros.geometry).

A FlowPlan's flow is (T, h, w, 2): per-step flow on the h x w working grid, in working pixels
(sof_ros.agent.FlowPlan; one working pixel is W/w x H/h pixels of the W x H planning frame). Tracks
start on a pixel grid of the planning frame and follow the flow step by step (nearest grid cell),
so they show, in frame pixels, where the plan expects each point to go.
"""
from __future__ import annotations

import numpy as np

from sof_ros.geometry import backproject, camera_to_world


def tracks(flow: np.ndarray, image_size: tuple[int, int], stride: int) -> np.ndarray:
    """(N, T+1, 2) pixel positions (u, v) of grid points followed through the plan."""
    flow = np.asarray(flow, dtype=np.float32)
    T, h, w, _ = flow.shape
    W, H = int(image_size[0]), int(image_size[1])
    stride = max(1, int(stride))
    px_per_cell = np.array([W / w, H / h])  # working pixels -> frame pixels
    us, vs = np.meshgrid(np.arange(stride / 2, W, stride), np.arange(stride / 2, H, stride))
    pts = np.stack([us.ravel(), vs.ravel()], 1).astype(np.float64)
    out = [pts.copy()]
    for t in range(T):
        j = np.clip(np.round((pts[:, 0] + 0.5) * w / W - 0.5), 0, w - 1).astype(int)
        i = np.clip(np.round((pts[:, 1] + 0.5) * h / H - 0.5), 0, h - 1).astype(int)
        pts = pts + flow[t, i, j] * px_per_cell
        pts[:, 0] = np.clip(pts[:, 0], 0, W - 1)
        pts[:, 1] = np.clip(pts[:, 1], 0, H - 1)
        out.append(pts.copy())
    return np.stack(out, 1)


def moving(trk: np.ndarray, min_px: float) -> np.ndarray:
    """Mask of tracks whose end point moved at least min_px."""
    return np.linalg.norm(trk[:, -1] - trk[:, 0], axis=1) >= min_px


def auto_gain(trk: np.ndarray, image_size: tuple[int, int], target: float = 0.1, max_gain: float = 6.0) -> float:
    """Magnification that draws the longest track about `target` of the image's short side (a
    plan's few steps often move only a few pixels), between 1 and max_gain."""
    if len(trk) == 0:
        return 1.0
    longest = float(np.linalg.norm(trk[:, -1] - trk[:, 0], axis=1).max())
    if longest <= 0:
        return 1.0
    return float(np.clip(target * min(image_size) / longest, 1.0, max_gain))


def overlay(rgb: np.ndarray, flow: np.ndarray, image_size: tuple[int, int], stride: int = 16,
            scale: int = 2, min_px: float = 0.5, gain: float = 0.0) -> np.ndarray:
    """rgb8 image (upscaled by `scale`) with the plan's tracks drawn: yellow path, red arrow head,
    green start, for tracks moving at least min_px and a third of the longest. Displacements are
    magnified by `gain` (0: `auto_gain`), noted in the corner."""
    import cv2

    scale = max(1, int(scale))
    img = np.ascontiguousarray(rgb[..., :3], dtype=np.uint8)
    W, H = int(image_size[0]), int(image_size[1])
    if img.shape[:2] != (H, W):
        img = cv2.resize(img, (W, H), interpolation=cv2.INTER_LINEAR)
    if scale > 1:
        img = cv2.resize(img, (W * scale, H * scale), interpolation=cv2.INTER_NEAREST)
    trk = tracks(flow, image_size, stride)
    trk = trk[moving(trk, min_px)]
    if len(trk):  # the dominant motion only: tracks under a third of the longest are clutter here
        length = np.linalg.norm(trk[:, -1] - trk[:, 0], axis=1)
        trk = trk[length >= length.max() / 3]
    g = auto_gain(trk, image_size) if gain <= 0 else float(gain)
    for tr in trk:
        tr = tr[:1] + g * (tr - tr[:1])
        pts = np.round((tr + 0.5) * scale - 0.5).astype(np.int32)
        cv2.polylines(img, [pts.reshape(-1, 1, 2)], False, (255, 220, 0), 1, cv2.LINE_AA)
        cv2.arrowedLine(img, tuple(int(x) for x in pts[-2]), tuple(int(x) for x in pts[-1]), (255, 40, 40), 1,
                        cv2.LINE_AA, tipLength=0.5)
        cv2.circle(img, tuple(int(x) for x in pts[0]), 1, (0, 255, 0), -1)
    if g != 1.0 and len(trk):
        cv2.putText(img, f"plan x{g:.1f}", (4, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def arrows_3d(flow: np.ndarray, image_size: tuple[int, int], K: np.ndarray, depth: np.ndarray | None,
              cam_pose: np.ndarray | None, stride: int = 16, min_px: float = 0.5,
              default_depth: float = 1.0) -> np.ndarray:
    """(N, 2, 3) arrow start / end points. Each track's start pixel is back-projected at its depth
    (or default_depth) and the end pixel at the same depth; in the camera optical frame, or in the
    base frame when cam_pose (camera-to-base) is given."""
    trk = tracks(flow, image_size, stride)
    trk = trk[moving(trk, min_px)]
    if len(trk) == 0:
        return np.zeros((0, 2, 3))
    start, end = trk[:, 0], trk[:, -1]
    z = np.full(len(trk), float(default_depth))
    if depth is not None:
        ui = np.clip(np.round(start[:, 0]).astype(int), 0, depth.shape[1] - 1)
        vi = np.clip(np.round(start[:, 1]).astype(int), 0, depth.shape[0] - 1)
        d = depth[vi, ui].astype(np.float64)
        ok = np.isfinite(d) & (d > 0)
        z[ok] = d[ok]
    K = np.asarray(K, dtype=np.float64)
    p0, p1 = backproject(K, start, z), backproject(K, end, z)
    if cam_pose is not None:
        cam_pose = np.asarray(cam_pose, dtype=np.float64)
        p0, p1 = camera_to_world(cam_pose, p0), camera_to_world(cam_pose, p1)
    return np.stack([p0, p1], 1)
