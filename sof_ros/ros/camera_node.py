"""Camera node: one place where frames enter the SOF graph, whatever their source.

source = sim        the sim bridge's image / depth / camera_info / camera_pose topics
source = topic      any ROS camera driver (e.g. realsense2_camera: color/image_raw +
                    aligned_depth_to_color/image_raw as 16UC1 millimetres + color/camera_info)
source = realsense  pyrealsense2 directly (colour + depth aligned to colour), imported lazily

Publishes rgb8 frames, 32FC1 depth (metres), the CameraInfo in use, the camera-to-base pose and
32FC2 optical flow between consecutive published frames, all at the working resolution
(working_width x working_height: the size the policy was trained on; 0 = as captured): the
policy and flow2action nodes never receive -- nor copy across DDS -- a frame larger than they use.
Every output of one frame carries the frame's capture stamp (input header stamp; for realsense the
host time the frameset arrived), which the policy copies into its plans and flow2action into its
command info, so latency is measurable.
Order: camera_info, depth, image; flow is computed on a worker thread (newest pair wins, a pair it
had no time for is skipped), so it never delays a frame, and only while the flow topic has a
subscriber. The flow topic is observed motion for display and recording, not an input of the plan.
"""
from __future__ import annotations

import threading

import numpy as np
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import CameraInfo, Image

from sof_ros.errors import SofError
from sof_ros.ros import conversions as cv
from sof_ros.ros.base import FrameSync, SofNode, latched_qos, run_node, sensor_qos
from sof_ros.ros.params import CameraNodeParams

SOURCES = ("sim", "topic", "realsense")
POSE_SOURCES = ("topic", "param", "tf", "none")


def make_flow_estimator(name: str):
    """The estimator behind the flow topic: sof_ros.flow.estimators.make_estimator (SofError for an unknown name)."""
    from sof_ros.flow.estimators import make_estimator

    return make_estimator(name)


class CameraNode(SofNode):
    PARAMS = CameraNodeParams
    DEFAULT_NAME = "sof_camera"

    def __init__(self, node_name: str | None = None, **kwargs):
        super().__init__(node_name, **kwargs)
        p: CameraNodeParams = self.p
        if p.source not in SOURCES:
            raise SofError(f"source must be one of {SOURCES}, got '{p.source}'")
        if p.camera_pose_source not in POSE_SOURCES:
            raise SofError(f"camera_pose_source must be one of {POSE_SOURCES}, got '{p.camera_pose_source}'")
        sq = sensor_qos(p.qos.sensor_depth)
        self.pub_image = self.create_publisher(Image, p.image_topic, sq)
        self.pub_depth = self.create_publisher(Image, p.depth_topic, sq)
        self.pub_info = self.create_publisher(CameraInfo, p.camera_info_topic, sq)
        self.pub_flow = self.create_publisher(Image, p.flow_topic, sq)
        self.pub_pose = self.create_publisher(PoseStamped, p.camera_pose_topic, latched_qos())
        if (p.working_width > 0) != (p.working_height > 0) or min(p.working_width, p.working_height) < 0:
            raise SofError(f"working_width and working_height must both be > 0 (a size) or both 0 (as captured), "
                           f"got {p.working_width}x{p.working_height}")
        self._flow = make_flow_estimator(p.flow_estimator) if p.flow_enabled else None
        self._flow_job: tuple | None = None
        self._flow_cv = threading.Condition()
        self._prev_rgb: np.ndarray | None = None
        self._last_pub_stamp = -(10**18)
        self._info: CameraInfo | None = None
        self._lock = threading.Lock()
        self.frames_published = 0
        self._stop = threading.Event()
        self._flow_thread = None
        if self._flow is not None:
            self._flow_thread = threading.Thread(target=self._flow_loop, name="flow", daemon=True)
            self._flow_thread.start()
        self._rs_thread = None
        self._tf = None

        if p.source in ("sim", "topic"):
            self.sync = FrameSync(use_depth=bool(p.depth_in_topic), tolerance_ns=int(p.sync_tolerance_s * 1e9))
            # camera_info first: rclpy runs ready callbacks in creation order, so a frame's own
            # camera_info is applied before the frame (matters when the resolution changes)
            self.create_subscription(CameraInfo, p.camera_info_in_topic, self._on_info, sq)
            self.create_subscription(Image, p.image_in_topic, self._on_image, sq)
            if p.depth_in_topic:
                self.create_subscription(Image, p.depth_in_topic, self._on_depth, sq)
        else:
            self._start_realsense()

        if p.camera_pose_source == "topic":
            self.create_subscription(PoseStamped, p.camera_pose_in_topic, self.pub_pose.publish, latched_qos())
        elif p.camera_pose_source == "param":
            T = cv.xyzquat_to_matrix(p.camera_pose)
            self.pub_pose.publish(cv.matrix_to_pose_stamped(T, self.now_ns(), p.base_frame))
        elif p.camera_pose_source == "tf":
            self._start_tf()

    # --- ROS-topic sources -------------------------------------------------------------------
    def _on_info(self, msg: CameraInfo) -> None:
        self._info = msg

    def _on_image(self, msg: Image) -> None:
        try:
            rgb = cv.msg_to_rgb(msg)
        except cv.ConversionError as exc:
            self.log_reason("input", f"dropping frame: {exc}", "warning")
            return
        stamp = cv.stamp_to_ns(msg.header.stamp) or self.now_ns()
        frame = self.sync.add_rgb(stamp, rgb, msg.header.frame_id)
        if frame is not None:
            self._emit(frame.stamp_ns, frame.rgb, frame.depth, None)

    def _on_depth(self, msg: Image) -> None:
        try:
            depth = cv.msg_to_depth(msg, self.p.depth_uint16_scale)
        except cv.ConversionError as exc:
            self.log_reason("input", f"dropping depth: {exc}", "warning")
            return
        stamp = cv.stamp_to_ns(msg.header.stamp) or self.now_ns()
        frame = self.sync.add_depth(stamp, depth)
        if frame is not None:
            self._emit(frame.stamp_ns, frame.rgb, frame.depth, None)

    # --- output ------------------------------------------------------------------------------
    def _emit(self, stamp: int, rgb: np.ndarray, depth: np.ndarray | None, K: np.ndarray | None,
              dist: np.ndarray | None = None) -> None:
        p = self.p
        with self._lock:
            # the frame published last, again (the sim bridge's lockstep re-publishing a frame nobody
            # answered): forwarded under the same stamp, so the nodes downstream know it for a repeat
            repeat = stamp == self._last_pub_stamp
            if p.rate_hz > 0 and not repeat and stamp - self._last_pub_stamp < 1e9 / p.rate_hz * 0.95:
                return  # throttled
            if K is None and self._info is None:
                self.log_reason("input", "waiting for camera_info before publishing frames", "warning")
                return
            h, w = rgb.shape[:2]
            if K is None:
                info = self._info
                if (info.width, info.height) != (w, h):
                    self.log_reason("input", f"camera_info is {info.width}x{info.height} but frames are {w}x{h}; dropping", "warning")
                    return
                K = cv.camera_info_to_K(info)
                dist, model = np.asarray(info.d), info.distortion_model or "plumb_bob"
            else:
                model = "plumb_bob"  # RealSense Brown-Conrady coefficients, as realsense2_camera publishes them
            if depth is not None and depth.shape != (h, w):
                self.log_reason("input", f"depth {depth.shape[::-1]} does not match frame {w}x{h}; dropping", "warning")
                return
            if p.working_width and (w, h) != (p.working_width, p.working_height):
                rgb, depth, K = to_working_size(rgb, depth, K, (p.working_width, p.working_height))
                h, w = rgb.shape[:2]
            fid = p.frame_id
            self._last_pub_stamp = stamp
            self.pub_info.publish(cv.camera_info_msg(K, w, h, stamp, fid, dist, model))
            if depth is not None:
                self.pub_depth.publish(cv.image_to_msg(depth.astype(np.float32), "32FC1", stamp, fid))
            self.pub_image.publish(cv.image_to_msg(rgb, "rgb8", stamp, fid))
            self.frames_published += 1
            if repeat:
                return  # no motion between a frame and itself
            prev, self._prev_rgb = self._prev_rgb, rgb
        if self._flow is not None and prev is not None and prev.shape == rgb.shape and self.pub_flow.get_subscription_count():
            with self._flow_cv:  # only while someone listens (RViz, the recorder): DIS costs a core's worth at 30 fps
                self._flow_job = (prev, rgb, stamp, fid)
                self._flow_cv.notify()

    def _flow_loop(self) -> None:
        """Flow between consecutive published frames, off the frame path (OpenCV releases the GIL)."""
        while True:
            with self._flow_cv:
                while self._flow_job is None and not self._stop.is_set():
                    self._flow_cv.wait()
                if self._stop.is_set():
                    return
                (prev, rgb, stamp, fid), self._flow_job = self._flow_job, None
            try:
                flow = np.asarray(self._flow(prev, rgb), dtype=np.float32)
            except Exception as exc:  # an estimator failure must not take the frames down
                self.log_reason("flow", f"flow estimation failed: {type(exc).__name__}: {exc}", "warning")
                continue
            self.pub_flow.publish(cv.image_to_msg(flow, "32FC2", stamp, fid))

    # --- realsense (pyrealsense2, lazily imported) ----------------------------------------------
    def _realsense_config(self, rs):
        """The pipeline's source: a camera (realsense_serial, or the first one) or a recording
        (realsense_bag) -- everything after this is the same code for both."""
        import os

        p, cfg = self.p, rs.config()
        if p.realsense_bag:
            if p.realsense_serial:
                raise SofError("set realsense_serial (a camera) or realsense_bag (a recording), not both")
            if not os.path.isfile(p.realsense_bag):
                raise SofError(f"realsense_bag '{p.realsense_bag}' is not a file (absolute path, or relative to "
                               f"the working directory {os.getcwd()})")
            cfg.enable_device_from_file(os.path.abspath(p.realsense_bag), repeat_playback=p.realsense_bag_repeat)
            cfg.enable_stream(rs.stream.color)  # whatever size / rate / format was recorded
            cfg.enable_stream(rs.stream.depth)
            return cfg, f"recording {p.realsense_bag}"
        if p.realsense_serial:
            cfg.enable_device(p.realsense_serial)
        cfg.enable_stream(rs.stream.color, p.realsense_width, p.realsense_height, rs.format.rgb8, p.realsense_fps)
        cfg.enable_stream(rs.stream.depth, p.realsense_width, p.realsense_height, rs.format.z16, p.realsense_fps)
        return cfg, f"camera {p.realsense_serial or '(first found)'}"

    def _start_realsense(self) -> None:
        try:
            import pyrealsense2 as rs
        except ImportError:
            raise SofError("source=realsense needs pyrealsense2 (pip install pyrealsense2 or the librealsense "
                           "ROS package); or use source=topic with the realsense2_camera driver") from None
        p = self.p
        cfg, what = self._realsense_config(rs)
        pipe = rs.pipeline()
        try:
            profile = pipe.start(cfg)
        except RuntimeError as exc:
            hint = ("check the file is a RealSense recording with colour and depth streams" if p.realsense_bag else
                    "is the camera plugged in (rs-enumerate-devices), the serial right, and "
                    f"{p.realsense_width}x{p.realsense_height}@{p.realsense_fps} a mode it supports?")
            raise SofError(f"cannot start the RealSense pipeline ({what}): {exc}; {hint}") from None
        try:
            color_profile = profile.get_stream(rs.stream.color).as_video_stream_profile()
            bgr = False  # a camera is asked for rgb8; a recording has what was recorded
            if p.realsense_bag:
                color_format = color_profile.format()
                if color_format not in (rs.format.rgb8, rs.format.bgr8):
                    raise SofError(f"the RealSense colour stream of {what} is {color_format}; rgb8 or bgr8 expected")
                bgr = color_format == rs.format.bgr8
            scale = float(profile.get_device().first_depth_sensor().get_depth_scale())
            intr = color_profile.get_intrinsics()  # depth is aligned to colour: one camera model for both
        except BaseException:
            pipe.stop()
            raise
        playback = profile.get_device().as_playback() if p.realsense_bag else None
        if playback is not None:
            playback.set_real_time(True)  # frames at the recorded rate, as from a camera
            what += f" ({intr.width}x{intr.height} {'bgr8' if bgr else 'rgb8'})"
        align = rs.align(rs.stream.color)
        K = np.array([[intr.fx, 0, intr.ppx], [0, intr.fy, intr.ppy], [0, 0, 1]], dtype=np.float64)
        self._rs_dist = np.asarray(intr.coeffs, dtype=np.float64)
        self.get_logger().info(f"RealSense {what}: depth scale {scale} m, depth aligned to colour")

        def loop():
            try:
                while not self._stop.is_set():
                    try:
                        frames = pipe.wait_for_frames(1000)
                    except RuntimeError as exc:
                        if playback is not None and playback.current_status() == rs.playback_status.stopped:
                            self.get_logger().info(f"end of the RealSense recording {p.realsense_bag}")
                            return
                        self.log_reason("realsense", f"no frames: {exc}", "warning")
                        continue
                    stamp = self.now_ns()
                    aligned = align.process(frames)
                    color, depth = aligned.get_color_frame(), aligned.get_depth_frame()
                    if not color or not depth:
                        continue
                    rgb = np.asanyarray(color.get_data()).copy()
                    if bgr:
                        rgb = np.ascontiguousarray(rgb[..., ::-1])
                    z = np.asanyarray(depth.get_data()).astype(np.float32) * np.float32(scale)
                    z[z == 0] = np.nan  # no depth measured (or outside the depth camera's view after alignment)
                    self._emit(stamp, rgb, z, K, self._rs_dist)
            finally:
                pipe.stop()

        self._rs_thread = threading.Thread(target=loop, name="realsense", daemon=True)
        self._rs_thread.start()

    # --- tf (tf2_ros, lazily imported) -----------------------------------------------------------
    def _start_tf(self) -> None:
        try:
            import tf2_ros
        except ImportError:
            raise SofError("camera_pose_source=tf needs tf2_ros; or set camera_pose_source=param with camera_pose") from None
        self._tf_buffer = tf2_ros.Buffer()
        self._tf = tf2_ros.TransformListener(self._tf_buffer, self)
        self.create_timer(1.0, self._poll_tf)

    def _poll_tf(self) -> None:
        import rclpy.time

        p = self.p
        try:
            t = self._tf_buffer.lookup_transform(p.base_frame, p.frame_id, rclpy.time.Time())
        except Exception as exc:  # tf2 raises several lookup exception types
            self.log_reason("tf", f"no transform {p.base_frame} <- {p.frame_id}: {exc}", "warning")
            return
        tr, q = t.transform.translation, t.transform.rotation
        T = cv.xyzquat_to_matrix([tr.x, tr.y, tr.z, q.x, q.y, q.z, q.w])
        self.pub_pose.publish(cv.matrix_to_pose_stamped(T, cv.stamp_to_ns(t.header.stamp), p.base_frame))

    def close(self) -> None:
        self._stop.set()
        with self._flow_cv:
            self._flow_cv.notify()
        if self._rs_thread is not None:
            self._rs_thread.join(timeout=2.0)
        if self._flow_thread is not None:
            self._flow_thread.join(timeout=2.0)


def to_working_size(rgb: np.ndarray, depth: np.ndarray | None, K: np.ndarray, size: tuple[int, int]):
    """(rgb, depth, K) of one frame resized to size (W, H): colour by area averaging (bilinear when
    enlarging), depth by nearest neighbour (no depth invented across edges, NaN stays NaN), K scaled."""
    import cv2

    from sof_ros.geometry import scale_intrinsics

    h, w = rgb.shape[:2]
    interp = cv2.INTER_AREA if size[0] <= w and size[1] <= h else cv2.INTER_LINEAR
    rgb = cv2.resize(rgb, size, interpolation=interp)
    if depth is not None:
        depth = cv2.resize(depth, size, interpolation=cv2.INTER_NEAREST)
    return rgb, depth, scale_intrinsics(K, (w, h), size)


def main(args: list[str] | None = None) -> int:
    return run_node(CameraNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
