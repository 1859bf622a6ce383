"""Write a RealSense recording without a camera, for the camera node's `realsense_bag` parameter.

librealsense's own objects do the work: an `rs.software_device` with a depth sensor (z16, its depth
scale as the depth-units option) and a colour sensor (rgb8), each with its intrinsics and the
depth-to-colour extrinsics, wrapped in an `rs.recorder`. Playing the file back through
`rs.config().enable_device_from_file()` then runs the real `rs.pipeline`, `rs.align` and intrinsics
code paths, as with a camera. librealsense 2.59 writes ROS 2 bags (.db3, SQLite).

    python -m sof_ros.ros.realsense_recording OUT.db3 [--task door-open] [--frames 60]
                                              [--width 320] [--height 240] [--fps 30]

renders the frames from MetaWorld (Sawyer, `corner` camera, the arm swinging) -- colour, and depth in
metres stored as z16 at 0.1 mm units. Then:

    sof-camera-node --ros-args -p source:=realsense -p realsense_bag:=OUT.db3
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Iterable

import numpy as np

from sof_ros.errors import SofError, run_cli


def _intrinsics(rs, K: np.ndarray, width: int, height: int, coeffs=None):
    intr = rs.intrinsics()
    intr.width, intr.height = int(width), int(height)
    intr.fx, intr.fy, intr.ppx, intr.ppy = float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])
    intr.model = rs.distortion.brown_conrady
    intr.coeffs = [float(c) for c in (coeffs if coeffs is not None else [0.0] * 5)]
    return intr


def _video_stream(rs, stream, uid: int, fmt, bpp: int, intr, fps: int):
    vs = rs.video_stream()
    vs.type, vs.index, vs.uid, vs.fmt, vs.bpp = stream, 0, uid, fmt, bpp
    vs.width, vs.height, vs.fps, vs.intrinsics = intr.width, intr.height, int(fps), intr
    return vs


def write_recording(path: str | Path, frames: Iterable[tuple[np.ndarray, np.ndarray]], color_K: np.ndarray,
                    depth_K: np.ndarray | None = None, depth_scale: float = 0.001, fps: int = 30,
                    color_coeffs=None, depth_to_color_m=(0.0, 0.0, 0.0), bgr: bool = False) -> int:
    """Record (rgb uint8 HxWx3, depth metres HxW; NaN or <= 0 = no depth) pairs as a RealSense
    recording at `path` (.db3). `depth_K` defaults to `color_K`; the depth camera sits
    `depth_to_color_m` from the colour camera (no rotation); depth beyond 65535 units is stored as
    0 (no depth). `bgr`: store the colour stream as bgr8 instead of rgb8. Returns the number of
    frames written."""
    import pyrealsense2 as rs

    path = Path(path)
    if path.suffix != ".db3":
        raise SofError(f"RealSense recordings written by librealsense {rs.__version__} end in .db3, got '{path}'")
    if not depth_scale > 0:
        raise SofError(f"depth_scale must be > 0 metres per unit, got {depth_scale}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise SofError("no frames to record")
    (ch, cw), (dh, dw) = first[0].shape[:2], first[1].shape[:2]

    dev = rs.software_device()
    depth_sensor, color_sensor = dev.add_sensor("Depth"), dev.add_sensor("Color")
    depth_intr = _intrinsics(rs, color_K if depth_K is None else depth_K, dw, dh)
    color_intr = _intrinsics(rs, color_K, cw, ch, color_coeffs)
    depth_profile = depth_sensor.add_video_stream(
        _video_stream(rs, rs.stream.depth, 0, rs.format.z16, 2, depth_intr, fps), True)
    color_profile = color_sensor.add_video_stream(
        _video_stream(rs, rs.stream.color, 1, rs.format.bgr8 if bgr else rs.format.rgb8, 3, color_intr, fps), True)
    depth_sensor.add_read_only_option(rs.option.depth_units, float(depth_scale))
    extr = rs.extrinsics()
    extr.rotation = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    extr.translation = [float(t) for t in depth_to_color_m]
    depth_profile.register_extrinsics_to(color_profile, extr)
    dev.create_matcher(rs.matchers.dlr_c)

    rec = rs.recorder(str(path), dev)
    rec_depth, rec_color = rec.query_sensors()  # the recorder's wrappers of the two sensors, in order
    rec_depth.open(depth_profile)
    rec_color.open(color_profile)
    rec_depth.start(lambda f: None)
    rec_color.start(lambda f: None)
    n = 0
    try:
        for rgb, depth_m in _chain(first, frames):
            rgb = np.asarray(rgb, dtype=np.uint8)
            if rgb.shape != (ch, cw, 3) or np.shape(depth_m) != (dh, dw):
                raise SofError(f"frame {n}: rgb {rgb.shape} / depth {np.shape(depth_m)} differ from the first frame's "
                               f"{(ch, cw, 3)} / {(dh, dw)}")
            d = np.asarray(depth_m, dtype=np.float64)
            units = np.round(np.nan_to_num(d, nan=0.0, posinf=0.0) / depth_scale)
            z16 = np.ascontiguousarray(np.where((units > 0) & (units <= 65535), units, 0).astype(np.uint16))  # 0: none, as a camera reports out of range
            t_ms = n * 1000.0 / fps
            rgb = np.ascontiguousarray(rgb[..., ::-1] if bgr else rgb)
            for sensor, profile, arr, bpp in ((depth_sensor, depth_profile, z16, 2), (color_sensor, color_profile, rgb, 3)):
                f = rs.software_video_frame()
                f.pixels, f.bpp, f.stride = arr, bpp, arr.shape[1] * bpp
                f.timestamp, f.domain, f.frame_number = t_ms, rs.timestamp_domain.hardware_clock, n
                f.profile = profile.as_video_stream_profile()
                if sensor is depth_sensor:
                    f.depth_units = float(depth_scale)
                sensor.on_video_frame(f)
            n += 1
            time.sleep(0.002)  # let the recorder's writer keep up
    finally:
        for s in (rec_depth, rec_color):
            s.stop()
            s.close()
        del rec  # closes the file
    return n


def _chain(first, rest):
    yield first
    yield from rest


def metaworld_frames(task: str, n: int, width: int, height: int, camera: str = "corner", seed: int = 0):
    """(rgb, depth metres) from a MetaWorld task, the arm swinging in a circle; plus K."""
    from sof_ros.config import SimConfig
    from sof_ros.sim.metaworld_env import MetaWorldArm

    arm = MetaWorldArm(task, SimConfig(camera=camera, width=width, height=height))
    try:
        obs = arm.reset(seed)
        K = arm.intrinsics()
        out = []
        for k in range(n):
            out.append((obs.rgb, obs.depth))
            a = 0.6 * np.array([np.cos(2 * np.pi * k / 30), np.sin(2 * np.pi * k / 30), 0.0, 0.0])
            obs = arm.step(a)
        return out, K
    finally:
        arm.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sof_ros.ros.realsense_recording", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="output recording (.db3)")
    ap.add_argument("--task", default="door-open", help="MetaWorld task rendered")
    ap.add_argument("--camera", default="corner", help="MetaWorld camera")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ns = ap.parse_args(argv)

    def body() -> int:
        if ns.frames < 1 or ns.fps < 1:
            raise SofError("--frames and --fps must be >= 1")
        frames, K = metaworld_frames(ns.task, ns.frames, ns.width, ns.height, ns.camera, ns.seed)
        n = write_recording(ns.out, frames, K, depth_scale=0.0001, fps=ns.fps)
        print(f"wrote {n} frames {ns.width}x{ns.height}@{ns.fps} to {Path(ns.out).resolve()}")
        return 0

    return run_cli(body)


if __name__ == "__main__":
    raise SystemExit(main())
