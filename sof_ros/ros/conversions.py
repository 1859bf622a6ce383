"""ROS message <-> NumPy conversions (no cv_bridge needed), stamps, poses and the SOF plan encoding.

Plan encoding (std messages only, no custom .msg files -- an ament_python package cannot build them):

* skill tokens -> `std_msgs/Int64MultiArray`. The message type has no header, so the plan's header
  block is stored in the layout's padding: `layout.data_offset = 5` and
  `data = [stamp.sec, stamp.nanosec, plan_steps, image_width, image_height, tok_0, ..., tok_n-1]`,
  `layout.dim = [MultiArrayDimension(label="tokens", size=n, stride=n)]`. Readers that honour
  `data_offset` (as the MultiArray spec says) see exactly the tokens; ours also gets the stamp of the
  camera frame the plan was made from, the number of flow steps and the frame size.
* decoded flow plan -> `sensor_msgs/Image`, encoding `32FC2`, the T per-step flow fields (h x w,
  pixels of the planning frame) stacked vertically: height = T*h, width = w. The header carries the
  same stamp (and the camera optical frame id).
* action chunk (FlowPlan.actions, when the action head predicts one at plan time) ->
  `std_msgs/Float64MultiArray`, `data_offset = 2`, `data = [stamp.sec, stamp.nanosec, a_00 .. a_T3]`,
  dims ("steps", T) x ("action", 4); T = 0 when the plan carries no chunk.
The three parts are paired by stamp; a plan is complete when all three have arrived.

Command provenance (what each command answers; the twist itself is stamped when it is published,
as MoveIt Servo requires) -> `std_msgs/Int64MultiArray`, `data_offset = 0`,
`data = [command_stamp_ns, frame_stamp_ns, plan_stamp_ns, step_in_plan, is_zero, gripper_milli]`, one
dim ("command_info", 6). command_stamp_ns is the header stamp of the TwistStamped (and PoseStamped)
published with it; frame_stamp_ns the capture stamp of the camera frame it answers (0 for a watchdog
or e-stop command that answers no frame); plan_stamp_ns the frame stamp of the plan it was computed
from (0: none); step_in_plan -1 when there is no plan; gripper_milli the gripper command published
with it times 1000 (NO_GRIPPER, INT64_MIN, when none was): the gripper topic is a plain Float64 with
no stamp, so this is how the sim bridge's lockstep applies exactly the gripper that answers a frame.
Five-value messages (recorded before the gripper was added) read as gripper None.
"""
from __future__ import annotations

import math
import sys
from typing import NamedTuple

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose, PoseStamped, TwistStamped
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Float64MultiArray, Header, Int64MultiArray, MultiArrayDimension

# encoding -> (numpy dtype, channels)
_ENCODINGS: dict[str, tuple[str, int]] = {
    "rgb8": ("uint8", 3), "bgr8": ("uint8", 3), "rgba8": ("uint8", 4), "bgra8": ("uint8", 4),
    "mono8": ("uint8", 1), "mono16": ("uint16", 1), "8UC1": ("uint8", 1), "8UC3": ("uint8", 3),
    "16UC1": ("uint16", 1), "32SC1": ("int32", 1), "32FC1": ("float32", 1), "32FC2": ("float32", 2),
    "32FC3": ("float32", 3), "64FC1": ("float64", 1),
}

PLAN_HEADER_LEN = 6  # sec, nanosec, plan_steps, image_width, image_height, frames_per_step
COMMAND_INFO_FIELDS = ("command_stamp_ns", "frame_stamp_ns", "plan_stamp_ns", "step_in_plan", "is_zero",
                       "gripper_milli")
NO_GRIPPER = -(2 ** 63)  # gripper_milli of a command sent without a gripper command


class ConversionError(ValueError):
    """A message cannot be converted: wrong encoding, size or content."""


# --- time -------------------------------------------------------------------------------------
def stamp_to_ns(stamp: Time) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> Time:
    ns = int(ns)
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def header(stamp_ns: int, frame_id: str = "") -> Header:
    return Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)


# --- images -----------------------------------------------------------------------------------
def _encoding_info(encoding: str) -> tuple[np.dtype, int]:
    if encoding in _ENCODINGS:
        dt, ch = _ENCODINGS[encoding]
        return np.dtype(dt), ch
    # generic OpenCV-style encodings, e.g. 32FC16
    for prefix, dt in (("8U", "uint8"), ("8S", "int8"), ("16U", "uint16"), ("16S", "int16"),
                       ("32S", "int32"), ("32F", "float32"), ("64F", "float64")):
        if encoding.startswith(prefix + "C") and encoding[len(prefix) + 1:].isdigit():
            return np.dtype(dt), int(encoding[len(prefix) + 1:])
    raise ConversionError(f"unsupported image encoding '{encoding}'")


def image_to_msg(arr: np.ndarray, encoding: str, stamp_ns: int = 0, frame_id: str = "") -> Image:
    """(H, W[, C]) array -> sensor_msgs/Image. `encoding` must match dtype and channel count."""
    dtype, ch = _encoding_info(encoding)
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] != ch:
        raise ConversionError(f"encoding {encoding} needs {ch} channel(s), got array of shape {arr.shape}")
    if arr.dtype != dtype:
        if np.issubdtype(dtype, np.integer) and not np.issubdtype(arr.dtype, np.integer):
            raise ConversionError(f"encoding {encoding} needs {dtype} data, got {arr.dtype}")
        arr = arr.astype(dtype)
    arr = np.ascontiguousarray(arr)
    msg = Image()
    msg.header = header(stamp_ns, frame_id)
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = int(sys.byteorder == "big" and dtype.itemsize > 1)
    msg.step = int(arr.shape[1] * ch * dtype.itemsize)
    msg.data = arr.tobytes()
    return msg


def msg_to_image(msg: Image) -> np.ndarray:
    """sensor_msgs/Image -> (H, W) or (H, W, C) array (a copy; row padding removed)."""
    dtype, ch = _encoding_info(msg.encoding)
    h, w = int(msg.height), int(msg.width)
    row = w * ch * dtype.itemsize
    step = int(msg.step) or row
    if step < row:
        raise ConversionError(f"image step {step} smaller than a row ({row} bytes) for {w}x{h} {msg.encoding}")
    buf = np.frombuffer(memoryview(msg.data), dtype=np.uint8)
    if buf.size < step * h:
        raise ConversionError(f"image data has {buf.size} bytes, expected {step * h} for {w}x{h} {msg.encoding}")
    rows = buf[: step * h].reshape(h, step)[:, :row]
    dt = dtype.newbyteorder(">" if msg.is_bigendian else "<") if dtype.itemsize > 1 else dtype
    arr = np.ascontiguousarray(rows).view(dt).reshape(h, w, ch).astype(dtype, copy=True)
    return arr[..., 0] if ch == 1 else arr


def msg_to_rgb(msg: Image) -> np.ndarray:
    """Any colour / mono image message -> (H, W, 3) uint8 RGB."""
    arr = msg_to_image(msg)
    enc = msg.encoding
    if enc in ("rgb8", "8UC3"):
        return arr
    if enc == "bgr8":
        return arr[..., ::-1].copy()
    if enc == "rgba8":
        return arr[..., :3].copy()
    if enc == "bgra8":
        return arr[..., 2::-1].copy()
    if enc in ("mono8", "8UC1"):
        return np.repeat(arr[..., None], 3, axis=2)
    raise ConversionError(f"cannot use '{enc}' as a colour frame; publish rgb8/bgr8/rgba8/bgra8/mono8")


def msg_to_depth(msg: Image, uint16_scale: float = 0.001) -> np.ndarray:
    """Depth image -> (H, W) float32 metres. 32FC1 is metres (REP 118), 16UC1 is scaled (mm by
    default). Invalid pixels (0 or NaN) become NaN."""
    arr = msg_to_image(msg)
    if msg.encoding in ("32FC1", "64FC1"):
        depth = arr.astype(np.float32)
    elif msg.encoding in ("16UC1", "mono16"):
        depth = arr.astype(np.float32) * np.float32(uint16_scale)
        depth[arr == 0] = np.nan
    else:
        raise ConversionError(f"depth image must be 32FC1 (metres) or 16UC1 (scaled), got '{msg.encoding}'")
    return depth


def mask_to_msg(mask: np.ndarray, stamp_ns: int = 0, frame_id: str = "") -> Image:
    """(H, W) bool mask -> mono8 image, 255 inside: what any segmentation node publishes."""
    return image_to_msg(np.asarray(mask, dtype=bool).astype(np.uint8) * 255, "mono8", stamp_ns, frame_id)


def msg_to_mask(msg: Image) -> np.ndarray:
    """mono8 / 8UC1 mask image -> (H, W) bool, True where nonzero."""
    if msg.encoding not in ("mono8", "8UC1"):
        raise ConversionError(f"a mask must be mono8 (nonzero = inside the mask), got '{msg.encoding}'")
    return msg_to_image(msg) != 0


# --- camera model -----------------------------------------------------------------------------
def camera_info_msg(K: np.ndarray, width: int, height: int, stamp_ns: int = 0, frame_id: str = "",
                    distortion: np.ndarray | None = None, model: str = "plumb_bob") -> CameraInfo:
    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    msg = CameraInfo()
    msg.header = header(stamp_ns, frame_id)
    msg.width, msg.height = int(width), int(height)
    msg.distortion_model = model
    msg.d = [float(x) for x in (np.zeros(5) if distortion is None else np.asarray(distortion).reshape(-1))]
    msg.k = [float(x) for x in K.reshape(-1)]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    P = np.zeros((3, 4))
    P[:, :3] = K
    msg.p = [float(x) for x in P.reshape(-1)]
    return msg


def camera_info_to_K(msg: CameraInfo) -> np.ndarray:
    K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ConversionError(f"camera_info K is not a valid intrinsic matrix: {K.tolist()}")
    return K


# --- poses ------------------------------------------------------------------------------------
def quat_to_matrix(q) -> np.ndarray:
    """(x, y, z, w) -> 3x3 rotation."""
    x, y, z, w = (float(v) for v in q)
    n = x * x + y * y + z * z + w * w
    if not math.isfinite(n) or n < 1e-12:
        raise ConversionError(f"quaternion {q} is not a rotation")
    s = 2.0 / n
    return np.array([
        [1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w)],
        [s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w)],
        [s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y)],
    ])


def matrix_to_quat(R: np.ndarray) -> np.ndarray:
    """3x3 rotation -> (x, y, z, w), w >= 0."""
    R = np.asarray(R, dtype=np.float64)
    t = np.trace(R)
    if t > 0:
        s = math.sqrt(t + 1.0) * 2
        q = [(R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, 0.25 * s]
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = math.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2]) * 2
        q = [0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s, (R[2, 1] - R[1, 2]) / s]
    elif R[1, 1] > R[2, 2]:
        s = math.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2]) * 2
        q = [(R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s, (R[0, 2] - R[2, 0]) / s]
    else:
        s = math.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1]) * 2
        q = [(R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s, (R[1, 0] - R[0, 1]) / s]
    q = np.asarray(q)
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def pose_msg_to_matrix(pose: Pose) -> np.ndarray:
    T = np.eye(4)
    o = pose.orientation
    T[:3, :3] = quat_to_matrix((o.x, o.y, o.z, o.w))
    T[:3, 3] = (pose.position.x, pose.position.y, pose.position.z)
    if not np.all(np.isfinite(T)):
        raise ConversionError("pose contains non-finite numbers")
    return T


def matrix_to_pose_stamped(T: np.ndarray, stamp_ns: int = 0, frame_id: str = "") -> PoseStamped:
    T = np.asarray(T, dtype=np.float64)
    msg = PoseStamped()
    msg.header = header(stamp_ns, frame_id)
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in T[:3, 3])
    q = matrix_to_quat(T[:3, :3])
    msg.pose.orientation.x, msg.pose.orientation.y, msg.pose.orientation.z, msg.pose.orientation.w = (float(v) for v in q)
    return msg


def xyzquat_to_matrix(v) -> np.ndarray:
    """[x, y, z, qx, qy, qz, qw] -> 4x4."""
    v = [float(x) for x in v]
    if len(v) != 7:
        raise ConversionError(f"pose must be [x, y, z, qx, qy, qz, qw], got {len(v)} numbers")
    T = np.eye(4)
    T[:3, :3] = quat_to_matrix(v[3:])
    T[:3, 3] = v[:3]
    return T


# --- commands ---------------------------------------------------------------------------------
def twist_msg(linear, angular, stamp_ns: int, frame_id: str) -> TwistStamped:
    msg = TwistStamped()
    msg.header = header(stamp_ns, frame_id)
    msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z = (float(v) for v in linear)
    msg.twist.angular.x, msg.twist.angular.y, msg.twist.angular.z = (float(v) for v in angular)
    return msg


def twist_to_arrays(msg: TwistStamped) -> tuple[np.ndarray, np.ndarray]:
    t = msg.twist
    return (np.array([t.linear.x, t.linear.y, t.linear.z], dtype=np.float64),
            np.array([t.angular.x, t.angular.y, t.angular.z], dtype=np.float64))


# --- plans ------------------------------------------------------------------------------------
def tokens_to_msg(tokens: np.ndarray, stamp_ns: int, plan_steps: int, image_size: tuple[int, int],
                  frames_per_step: int = 1) -> Int64MultiArray:
    """plan_steps: flow fields in the plan; frames_per_step: control steps between two of them."""
    if int(frames_per_step) < 1:
        raise ConversionError(f"frames_per_step must be >= 1, got {frames_per_step}")
    toks = [int(t) for t in np.asarray(tokens).reshape(-1)]
    st = ns_to_stamp(stamp_ns)
    msg = Int64MultiArray()
    msg.layout.dim = [MultiArrayDimension(label="tokens", size=len(toks), stride=len(toks))]
    msg.layout.data_offset = PLAN_HEADER_LEN
    msg.data = [int(st.sec), int(st.nanosec), int(plan_steps), int(image_size[0]), int(image_size[1]),
                int(frames_per_step)] + toks
    return msg


def msg_to_tokens(msg: Int64MultiArray) -> tuple[np.ndarray, int, int, tuple[int, int], int]:
    """-> (tokens, stamp_ns, plan_steps, (W, H), frames_per_step)."""
    data = list(msg.data)
    off = int(msg.layout.data_offset)
    if off != PLAN_HEADER_LEN or len(data) < PLAN_HEADER_LEN:
        raise ConversionError(
            f"tokens message has data_offset {off} and {len(data)} values; expected the SOF header block "
            f"of {PLAN_HEADER_LEN} values (sec, nanosec, plan_steps, width, height, frames_per_step) before the tokens")
    sec, nsec, steps, w, h, per_step = data[:PLAN_HEADER_LEN]
    if per_step < 1:
        raise ConversionError(f"tokens message says {per_step} frames per plan step; it must be >= 1")
    return (np.asarray(data[PLAN_HEADER_LEN:], dtype=np.int64), int(sec) * 1_000_000_000 + int(nsec),
            int(steps), (int(w), int(h)), int(per_step))


def flow_plan_to_msg(flow: np.ndarray, stamp_ns: int, frame_id: str) -> Image:
    flow = np.asarray(flow, dtype=np.float32)
    if flow.ndim != 4 or flow.shape[-1] != 2:
        raise ConversionError(f"flow plan must be (T, h, w, 2), got {flow.shape}")
    T, h, w, _ = flow.shape
    return image_to_msg(flow.reshape(T * h, w, 2), "32FC2", stamp_ns, frame_id)


def msg_to_flow_plan(msg: Image, plan_steps: int) -> np.ndarray:
    """plan_steps 0: a plan without flow (rows that predict actions directly); the image is empty."""
    arr = msg_to_image(msg)
    if msg.encoding == "32FC2" and plan_steps == 0 and arr.shape[0] == 0:
        return np.zeros((0, 0, arr.shape[1], 2), np.float32)
    if msg.encoding != "32FC2" or plan_steps <= 0 or arr.shape[0] % plan_steps:
        raise ConversionError(
            f"flow plan image {msg.width}x{msg.height} {msg.encoding} cannot hold {plan_steps} stacked 32FC2 fields")
    return arr.reshape(plan_steps, arr.shape[0] // plan_steps, arr.shape[1], 2)


def actions_to_msg(actions: np.ndarray | None, stamp_ns: int) -> Float64MultiArray:
    a = np.zeros((0, 4)) if actions is None else np.asarray(actions, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 4:
        raise ConversionError(f"action chunk must be (T, 4), got {a.shape}")
    st = ns_to_stamp(stamp_ns)
    msg = Float64MultiArray()
    msg.layout.dim = [MultiArrayDimension(label="steps", size=a.shape[0], stride=a.size),
                      MultiArrayDimension(label="action", size=4, stride=4)]
    msg.layout.data_offset = 2
    msg.data = [float(st.sec), float(st.nanosec)] + [float(x) for x in a.reshape(-1)]
    return msg


def msg_to_actions(msg: Float64MultiArray) -> tuple[np.ndarray | None, int]:
    """-> (actions (T, 4) or None when T = 0, stamp_ns)."""
    data = np.asarray(msg.data, dtype=np.float64)
    if int(msg.layout.data_offset) != 2 or data.size < 2 or (data.size - 2) % 4:
        raise ConversionError(f"action chunk message has data_offset {msg.layout.data_offset} and {data.size} values; "
                              "expected [sec, nanosec] then T x 4 actions")
    stamp = int(data[0]) * 1_000_000_000 + int(data[1])
    a = data[2:].reshape(-1, 4)
    return (a if len(a) else None), stamp


# --- command provenance -----------------------------------------------------------------------------
class CommandInfo(NamedTuple):
    command_stamp_ns: int  # header stamp of the command (its publish time)
    frame_stamp_ns: int  # capture stamp of the frame it answers; 0 = none (watchdog, e-stop)
    plan_stamp_ns: int  # frame stamp of the plan it came from; 0 = none
    step_in_plan: int  # -1 = no plan
    is_zero: bool
    gripper: float | None = None  # the gripper command sent with it (-1 open .. 1 closed); None = none sent


def command_info_msg(info: CommandInfo) -> Int64MultiArray:
    msg = Int64MultiArray()
    msg.layout.dim = [MultiArrayDimension(label="command_info", size=len(COMMAND_INFO_FIELDS), stride=len(COMMAND_INFO_FIELDS))]
    g = None if info.gripper is None else float(info.gripper)
    grip = int(round(g * 1000)) if g is not None and math.isfinite(g) else NO_GRIPPER  # a non-finite one: none
    msg.data = [int(info.command_stamp_ns), int(info.frame_stamp_ns), int(info.plan_stamp_ns), int(info.step_in_plan),
                int(bool(info.is_zero)), grip]
    return msg


def msg_to_command_info(msg: Int64MultiArray) -> CommandInfo:
    data = [int(v) for v in msg.data]
    n = len(COMMAND_INFO_FIELDS)
    if len(data) not in (n - 1, n) or int(msg.layout.data_offset) != 0:
        raise ConversionError(f"command info must be {n} values {COMMAND_INFO_FIELDS} "
                              f"at data_offset 0, got {len(data)} at {msg.layout.data_offset}")
    c, f, pl, step, zero = data[:5]
    grip = data[5] if len(data) == n else NO_GRIPPER
    return CommandInfo(c, f, pl, step, bool(zero), None if grip == NO_GRIPPER else grip / 1000.0)


def gripper_opening(msg, names: list[str], max_opening: float) -> float | None | str:
    """JointState -> opening in [0, 1] (None if non-finite), or a reason string if the joints are absent."""
    index = {n: i for i, n in enumerate(msg.name)}
    missing = [n for n in names if n not in index or index[n] >= len(msg.position)]
    if missing or not names:
        return f"joint states without finger joints {missing or names} (robot.gripper_joint_names); gripper opening not updated"
    total = float(sum(msg.position[index[n]] for n in names))
    if not np.isfinite(total) or not max_opening > 0:
        return None
    return float(np.clip(total / max_opening, 0.0, 1.0))
