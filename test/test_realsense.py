"""The camera node's realsense source through the real pyrealsense2, without a camera: frames are
injected into an `rs.software_device`, recorded with `rs.recorder` (sof_ros.ros.realsense_recording)
and played back through `realsense_bag`, so the node's own rs.pipeline, rs.align to colour,
intrinsics and depth scale run; the node is a real rclpy node publishing over DDS."""
from __future__ import annotations

import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
import pyrealsense2 as rs  # noqa: E402  -- a requirement: missing it is a failure, not a skip

from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from sof_ros.errors import SofError  # noqa: E402
from sof_ros.ros import conversions as cv  # noqa: E402
from sof_ros.ros.base import sensor_qos  # noqa: E402
from sof_ros.ros.params import Topics  # noqa: E402
from sof_ros.ros.realsense_recording import write_recording  # noqa: E402

pytestmark = pytest.mark.timeout(90)

W, H, N = 64, 48, 20
DEPTH_SCALE = 0.00025  # not librealsense's 0.001 default: the node must read it from the device
# the depth camera has half the colour camera's field of view, so alignment moves depth visibly:
# colour pixel u <-> depth pixel 2u - 31.5 (rows: 2v - 23.5)
COLOR_K = np.array([[30.0, 0, 31.5], [0, 31.0, 23.5], [0, 0, 1]])
DEPTH_K = np.array([[60.0, 0, 31.5], [0, 62.0, 23.5], [0, 0, 1]])
COEFFS = [0.01, 0.0, 0.0, 0.0, 0.0]
EDGE = 40  # depth columns < EDGE at 1 m, the rest at 2 m


def ov(**kw) -> list[Parameter]:
    return [Parameter(k, value=v) for k, v in kw.items()]


def synthetic_frames():
    """Colour: a smooth texture moving 1 px per frame, frame number in pixel (0, 0). Depth: a step
    from 1 m to 2 m at column EDGE, one invalid pixel."""
    import cv2

    blocks = np.random.default_rng(0).integers(0, 255, (H // 8, W // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    tex = cv2.GaussianBlur(blocks, (0, 0), 2.0)
    frames = []
    for k in range(N):
        rgb = np.roll(tex, k, axis=1).copy()
        rgb[0, 0] = (k, 255 - k, 7)
        depth = np.where(np.arange(W)[None, :] < EDGE, 1.0, 2.0) * np.ones((H, 1))
        depth[H // 2, 10] = np.nan
        frames.append((rgb, depth.astype(np.float32)))
    return frames


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    frames = synthetic_frames()
    path = tmp_path_factory.mktemp("rs") / "synthetic.db3"
    assert write_recording(path, frames, COLOR_K, DEPTH_K, DEPTH_SCALE, fps=30, color_coeffs=COEFFS) == N
    return path, frames


def camera(ros, path, **kw):
    from sof_ros.ros.camera_node import CameraNode

    params = dict(source="realsense", realsense_bag=str(path), camera_pose_source="none", frame_id="rs_color_optical")
    params.update(kw)
    return ros.add(CameraNode(context=ros.ctx, parameter_overrides=ov(**params)))


def test_recording_plays_back_through_the_sdk(recording):
    """The file is a RealSense recording librealsense itself reads: streams, intrinsics, depth scale."""
    path, _ = recording
    pipe, cfg = rs.pipeline(), rs.config()
    cfg.enable_device_from_file(str(path), repeat_playback=False)
    profile = pipe.start(cfg)
    try:
        color = profile.get_stream(rs.stream.color).as_video_stream_profile()
        depth = profile.get_stream(rs.stream.depth).as_video_stream_profile()
        ci, di = color.get_intrinsics(), depth.get_intrinsics()
        assert (color.format(), depth.format()) == (rs.format.rgb8, rs.format.z16)
        assert (ci.width, ci.height, ci.fx, ci.fy, ci.ppx, ci.ppy) == (W, H, 30.0, 31.0, 31.5, 23.5)
        assert (di.fx, di.fy) == (60.0, 62.0)
        assert profile.get_device().first_depth_sensor().get_depth_scale() == pytest.approx(DEPTH_SCALE)
    finally:
        pipe.stop()


def test_realsense_recording_gives_aligned_rgbd_with_intrinsics_and_metres(ros, recording):
    path, frames = recording
    sq = sensor_qos(30)
    imgs = ros.collect(Image, Topics.IMAGE, sq)
    depths = ros.collect(Image, Topics.DEPTH, sq)
    infos = ros.collect(CameraInfo, Topics.CAMERA_INFO, sq)
    flows = ros.collect(Image, Topics.FLOW, sq)
    cam = camera(ros, path)
    assert ros.wait_for(lambda: len(imgs) >= 5 and len(depths) >= 5 and len(infos) >= 5 and flows, 20), \
        (len(imgs), len(depths), len(infos), len(flows), ros.error)

    # colour: the recorded frames, untouched (rgb8, the frame number still in pixel (0, 0))
    img = imgs[-1]
    assert (img.encoding, img.width, img.height, img.header.frame_id) == ("rgb8", W, H, "rs_color_optical")
    rgb = cv.msg_to_rgb(img)
    k = int(rgb[0, 0, 0])
    assert np.array_equal(rgb, frames[k][0])

    # depth: 32FC1 metres, aligned to the colour camera -- the 1 m / 2 m edge at depth column 40 lands
    # at colour column ~35.75; outside the depth camera's (narrower) view there is no depth (NaN)
    stamp = cv.stamp_to_ns(img.header.stamp)
    dmsg = next(m for m in depths if cv.stamp_to_ns(m.header.stamp) == stamp)
    assert (dmsg.encoding, dmsg.width, dmsg.height) == ("32FC1", W, H)
    z = cv.msg_to_depth(dmsg)
    row = z[H // 2 - 4]
    assert np.allclose(row[17:35], 1.0, atol=1e-3), row
    assert np.allclose(row[37:47], 2.0, atol=1e-3), row  # unaligned depth would still be 1 m at 37..39
    assert np.isnan(row[:15]).all() and np.isnan(row[49:]).all(), row  # depth view: colour columns ~16..47
    assert np.isnan(z[:10, 30]).all() and np.isfinite(z[20:28, 30]).all()

    # camera_info: the colour camera's model (depth is aligned to it), same stamp as the frame
    info = next(m for m in infos if cv.stamp_to_ns(m.header.stamp) == stamp)
    assert (info.width, info.height, info.distortion_model) == (W, H, "plumb_bob")
    np.testing.assert_allclose(cv.camera_info_to_K(info), COLOR_K)
    np.testing.assert_allclose(info.d, COEFFS, atol=1e-7)

    f = cv.msg_to_image(flows[-1])
    assert flows[-1].encoding == "32FC2" and f.shape == (H, W, 2) and np.isfinite(f).all()
    cam.close()
    assert not cam._rs_thread.is_alive()


def test_bgr_recording_is_published_as_rgb(ros, tmp_path):
    frames = synthetic_frames()[:6]
    path = tmp_path / "bgr.db3"
    write_recording(path, frames, COLOR_K, DEPTH_K, DEPTH_SCALE, fps=30, bgr=True)
    imgs = ros.collect(Image, Topics.IMAGE, sensor_qos(30))
    cam = camera(ros, path, flow_enabled=False)
    assert ros.wait_for(lambda: len(imgs) >= 2, 20), ros.error
    rgb = cv.msg_to_rgb(imgs[-1])
    assert np.array_equal(rgb, frames[int(rgb[0, 0, 0])][0])
    cam.close()


def test_recording_without_repeat_stops_at_its_end(ros, recording):
    path, _ = recording
    imgs = ros.collect(Image, Topics.IMAGE, sensor_qos(30))
    cam = camera(ros, path, realsense_bag_repeat=False, flow_enabled=False)
    assert ros.wait_for(lambda: not cam._rs_thread.is_alive(), 20)  # real time: 20 frames at 30 fps
    time.sleep(0.3)
    assert 1 <= len(imgs) <= N and cam.frames_published <= N
    cam.close()


def test_realsense_configuration_errors_are_clear(ros, tmp_path):
    from sof_ros.ros.camera_node import CameraNode

    def make(**kw):
        return CameraNode(context=ros.ctx, parameter_overrides=ov(source="realsense", camera_pose_source="none", **kw))

    with pytest.raises(SofError, match="not a file"):
        make(realsense_bag=str(tmp_path / "missing.db3"))
    bogus = tmp_path / "bogus.db3"
    bogus.write_text("not a recording")
    with pytest.raises(SofError, match="cannot start the RealSense pipeline"):
        make(realsense_bag=str(bogus))
    with pytest.raises(SofError, match="not both"):
        make(realsense_bag=str(bogus), realsense_serial="123")
    if len(rs.context().query_devices()) == 0:  # the usual case: no camera on this machine
        with pytest.raises(SofError, match="camera plugged in"):
            make()


def test_metaworld_recording_cli(tmp_path):
    """`python -m sof_ros.ros.realsense_recording`: MetaWorld frames as a recording the SDK reads."""
    from sof_ros.ros.realsense_recording import main

    path = tmp_path / "mw.db3"
    assert main([str(path), "--task", "door-open", "--frames", "4", "--width", "64", "--height", "48"]) == 0
    pipe, cfg = rs.pipeline(), rs.config()
    cfg.enable_device_from_file(str(path), repeat_playback=False)
    profile = pipe.start(cfg)
    try:
        profile.get_device().as_playback().set_real_time(False)
        frames = pipe.wait_for_frames(2000)
        depth = np.asanyarray(frames.get_depth_frame().get_data()) * profile.get_device().first_depth_sensor().get_depth_scale()
        assert np.asanyarray(frames.get_color_frame().get_data()).shape == (48, 64, 3)
        valid = depth[depth > 0]
        assert valid.size > 0.5 * depth.size and 0.2 < np.median(valid) < 3.0  # the table, in metres
    finally:
        pipe.stop()
