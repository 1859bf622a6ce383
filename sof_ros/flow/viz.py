"""Flow pictures for people: Middlebury colour wheel, arrows on the frame, and per-episode strips.

Colour wheel (Baker et al., "A Database and Evaluation Methodology for Optical Flow"): hue is the
flow direction, saturation its magnitude relative to `max_magnitude`; white means no motion.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from sof_ros.errors import SofError
from sof_ros.geometry import resize_flow


def _color_wheel() -> np.ndarray:
    """(55, 3) RGB wheel: red-yellow-green-cyan-blue-magenta with Middlebury's segment lengths."""
    ry, yg, gc, cb, bm, mr = 15, 6, 4, 11, 13, 6
    ramps = []
    for n, start, change in ((ry, (255, 0, 0), (0, 1, 0)), (yg, (255, 255, 0), (-1, 0, 0)),
                             (gc, (0, 255, 0), (0, 0, 1)), (cb, (0, 255, 255), (0, -1, 0)),
                             (bm, (0, 0, 255), (1, 0, 0)), (mr, (255, 0, 255), (0, 0, -1))):
        k = np.arange(n)[:, None] / n
        ramps.append(np.asarray(start, float) + 255.0 * k * np.asarray(change, float))
    return np.concatenate(ramps)


_WHEEL = _color_wheel()


def flow_to_color(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """(H, W, 2) flow -> (H, W, 3) uint8 RGB. `max_magnitude` fixes the scale across frames
    (default: this field's largest finite magnitude) so a strip can be compared frame to frame."""
    flow = np.asarray(flow, dtype=np.float32)
    if flow.ndim != 3 or flow.shape[-1] != 2:
        raise SofError(f"flow must be (H, W, 2), got {flow.shape}")
    u, v = flow[..., 0], flow[..., 1]
    bad = ~(np.isfinite(u) & np.isfinite(v))
    u, v = np.where(bad, 0, u), np.where(bad, 0, v)
    mag = np.sqrt(u * u + v * v)
    scale = float(mag.max()) if max_magnitude is None else float(max_magnitude)
    rad = mag / max(scale, 1e-6)
    n = len(_WHEEL)
    angle = np.arctan2(-v, -u) / np.pi  # in [-1, 1]
    fk = (angle + 1) / 2 * (n - 1)
    k0 = np.floor(fk).astype(int)
    k1 = (k0 + 1) % n
    f = (fk - k0)[..., None]
    col = ((1 - f) * _WHEEL[k0] + f * _WHEEL[k1]) / 255.0
    r = np.clip(rad, 0, 1)[..., None]
    col = 1 - r * (1 - col)  # saturate with magnitude, white at zero
    col = np.where((rad > 1)[..., None], col * 0.75, col)  # beyond the scale: darker
    col[bad] = 0
    return np.clip(col * 255 + 0.5, 0, 255).astype(np.uint8)


def flow_arrows(frame: np.ndarray, flow: np.ndarray, step: int | None = None, scale: float = 1.0,
                color: tuple[int, int, int] = (255, 235, 0), min_magnitude: float = 0.25) -> np.ndarray:
    """Arrows (x -> x + scale * flow) on a grid every `step` px over a copy of the RGB frame;
    yellow with a dark outline so they stay visible on the red arm and the black background."""
    import cv2

    frame = np.ascontiguousarray(np.asarray(frame, dtype=np.uint8)).copy()
    h, w = frame.shape[:2]
    if np.shape(flow)[:2] != (h, w):
        raise SofError(f"flow {np.shape(flow)} does not match frame {frame.shape}")
    step = step or max(4, min(h, w) // 16)
    thickness = 1 if min(h, w) < 400 else 2
    for y in range(step // 2, h, step):
        for x in range(step // 2, w, step):
            dx, dy = (float(c) * scale for c in flow[y, x])
            if not np.isfinite(dx + dy) or dx * dx + dy * dy < (min_magnitude * scale) ** 2:
                continue
            end = (int(round(x + dx)), int(round(y + dy)))
            cv2.arrowedLine(frame, (x, y), end, (0, 0, 0), thickness + 2, cv2.LINE_AA, tipLength=0.35)
            cv2.arrowedLine(frame, (x, y), end, color, thickness, cv2.LINE_AA, tipLength=0.35)
    return frame


def episode_strip(frames: np.ndarray, flows: np.ndarray, every: int = 8, arrows: bool = True,
                  max_magnitude: float | None = None) -> np.ndarray:
    """One image: every k-th frame (top), its flow as colour (middle) and arrows (bottom, optional).

    frames (T, H, W, 3) uint8, flows (T-1, H, W, 2). One colour scale for the whole strip.
    """
    frames, flows = np.asarray(frames), np.asarray(flows, dtype=np.float32)
    if len(flows) < 1 or len(frames) < len(flows):
        raise SofError(f"episode_strip needs T frames and T-1 flows, got {len(frames)} and {len(flows)}")
    idx = list(range(0, len(flows), max(1, int(every))))
    if max_magnitude is None:
        mags = np.linalg.norm(flows[idx], axis=-1)
        max_magnitude = max(float(np.nanpercentile(mags, 99.5)), 1e-3)
    gap = 2
    h, w = frames.shape[1:3]
    rows = 3 if arrows else 2
    out = np.full((rows * h + (rows - 1) * gap, len(idx) * (w + gap) - gap, 3), 255, np.uint8)
    auto_scale = max(1.0, 0.5 * max(4, min(h, w) // 16) / max_magnitude)  # sub-pixel flow still visible
    for j, t in enumerate(idx):
        x0 = j * (w + gap)
        out[:h, x0:x0 + w] = frames[t]
        out[h + gap:2 * h + gap, x0:x0 + w] = flow_to_color(flows[t], max_magnitude)
        if arrows:
            out[2 * (h + gap):, x0:x0 + w] = flow_arrows(frames[t], flows[t], scale=auto_scale)
    return out


def save_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an RGB uint8 image as PNG (creating folders), returning the path."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise SofError(f"save_png needs uint8, got {image.dtype}")
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    if not cv2.imwrite(str(path), bgr):
        raise SofError(f"could not write {path}; check the folder is writable")
    return path


def arrow_image(frame: np.ndarray, flow: np.ndarray, min_side: int = 384, max_magnitude: float | None = None) -> np.ndarray:
    """Arrows readable on small frames: upsample frame and flow to `min_side` px, then scale arrows
    so the largest motion spans about one grid cell (true lengths are often below a pixel)."""
    import cv2

    frame, flow = np.asarray(frame, np.uint8), np.asarray(flow, np.float32)
    h, w = frame.shape[:2]
    s = max(1.0, min_side / min(h, w))
    if s > 1:
        size = (int(round(w * s)), int(round(h * s)))
        frame = cv2.resize(frame, size, interpolation=cv2.INTER_NEAREST)
        flow = resize_flow(flow, size[::-1], interpolation="nearest")
    step = max(8, min(frame.shape[:2]) // 20)
    mag = float(max_magnitude * s) if max_magnitude else float(np.nanpercentile(np.linalg.norm(flow, axis=-1), 99.5))
    scale = max(1.0, 0.9 * step / max(mag, 1e-3))
    return flow_arrows(frame, flow, step=step, scale=scale, min_magnitude=0.25 * s)
