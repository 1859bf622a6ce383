"""Shared node plumbing: parameter declaration from the params dataclasses, QoS profiles, reason
logging, agent loading, frame synchronisation and the `main()` runner."""
from __future__ import annotations

import copy
import dataclasses
import faulthandler
import os
import signal
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from sof_ros.errors import SofError
from sof_ros.policies import AgentInput
from sof_ros.ros import params as P


# --- parameters ---------------------------------------------------------------------------------
def declare_params(node: Node, cls: type):
    """Declare every field of a params dataclass as a ROS parameter (with its description), apply
    overrides from --params-file / parameter_overrides, and return the filled dataclass.

    robot.name is declared first; its profile supplies the defaults of the other robot.* fields."""
    fields = list(P.iter_fields(cls))
    values: dict[str, Any] = {}
    profile_defaults: dict[str, Any] = {}
    order = sorted(fields, key=lambda nf: 0 if nf[0].endswith("robot.name") else 1)
    for name, f in order:
        kind = P.field_kind(f)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if name in profile_defaults:
            default = profile_defaults[name]
        desc = ParameterDescriptor(
            description=f.metadata.get("help", ""), read_only=True,
            # YAML writes 10 for 10.0; accept ints for float parameters and convert below
            dynamic_typing=kind in ("float", "list[float]"))
        value = node.declare_parameter(name, default, desc).value
        values[name] = _coerce(name, kind, value)
        if name.endswith("robot.name"):
            prefix = name[: -len("name")]
            try:
                prof = P.RobotParams.profile(values[name])
            except ValueError as exc:
                raise SofError(f"parameter {name}: {exc}") from None
            profile_defaults.update({prefix + k: v for k, v in P.flatten(dataclasses.asdict(prof)).items()})
    return P.build(cls, values)


def _coerce(name: str, kind: str, value: Any) -> Any:
    try:
        if kind == "float":
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if kind == "list[float]":
            return [float(v) for v in value]
        if kind == "list[str]":
            return [str(v) for v in value]
        if kind == "int" and not isinstance(value, bool):
            return int(value)
        if kind == "bool" and isinstance(value, bool):
            return value
        if kind == "str" and isinstance(value, str):
            return value
    except (TypeError, ValueError):
        pass
    raise SofError(f"parameter {name} must be {kind}, got {value!r}")


# --- QoS ------------------------------------------------------------------------------------------
def sensor_qos(depth: int = 2) -> QoSProfile:
    """Camera frames, depth, camera_info, joint states: best effort, keep last (drop, never queue)."""
    return QoSProfile(reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST,
                      depth=max(1, depth), durability=DurabilityPolicy.VOLATILE)


def command_qos(depth: int = 10) -> QoSProfile:
    """Commands and plans: reliable."""
    return QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                      depth=max(1, depth), durability=DurabilityPolicy.VOLATILE)


def latched_qos() -> QoSProfile:
    """State a late joiner must see (instruction, e-stop, camera pose, success): reliable, transient local."""
    return QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                      depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)



QOS_CHECK_PERIOD_S = 1.0


def as_graph_reports(qos: QoSProfile) -> QoSProfile:
    """`qos` with the middleware defaults resolved as the ROS graph reports a peer's endpoint (a
    "default" deadline, lifespan or liveliness lease is infinite, "system default" liveliness is
    automatic, reliability reliable, durability volatile: rmw's default profile, as Fast DDS and
    Cyclone DDS apply it). qos_check_compatible on an unresolved profile of ours against a peer's
    resolved one saw a deadline on the subscriber's side only, and called every subscriber of every
    publisher of ours incompatible."""
    from rclpy.duration import Infinite
    from rclpy.qos import LivelinessPolicy

    out = copy.copy(qos)
    for name in ("deadline", "lifespan", "liveliness_lease_duration"):
        if getattr(out, name).nanoseconds == 0:
            setattr(out, name, Infinite)
    if out.liveliness == LivelinessPolicy.SYSTEM_DEFAULT:
        out.liveliness = LivelinessPolicy.AUTOMATIC
    if out.reliability == ReliabilityPolicy.SYSTEM_DEFAULT:
        out.reliability = ReliabilityPolicy.RELIABLE
    if out.durability == DurabilityPolicy.SYSTEM_DEFAULT:
        out.durability = DurabilityPolicy.VOLATILE
    return out


class QosWatch:
    """Warns about peers whose QoS can never match ours (no message would pass), as rclpy's default
    QoS event callbacks do -- e.g. `ros2 topic pub` (volatile) on the transient-local instruction
    topic, or a reliable display on a best-effort camera topic -- from one timer reading the ROS
    graph, re-examining an endpoint only when its peer count changed (so a peer replaced by another
    within one second is not examined: reading every endpoint's peers each second costs the executor
    more than the count does).
    Why not rclpy's defaults: they add two Python event handlers per publisher and subscription,
    which SingleThreadedExecutor walks for every message it waits for; on the Flow2Action node
    (~20 endpoints, several messages per frame) that was a fifth of its CPU and lengthened the
    frame -> command latency on a 2-core machine (docs/benchmarks.md, "ROS control loop")."""

    def __init__(self):
        self.endpoints: list[tuple[str, str, QoSProfile]] = []  # (our kind, topic, our QoS as the graph reports it)
        self._peer_counts: dict[int, int] = {}
        self._reported: set[tuple] = set()
        self.problems: list[str] = []

    def add(self, kind: str, topic: str, qos: QoSProfile) -> None:
        self.endpoints.append((kind, topic, as_graph_reports(qos)))

    def check(self, node: Node) -> list[str]:
        """Incompatibilities found since the last call, each peer endpoint reported once."""
        from rclpy.qos import QoSCompatibility, qos_check_compatible

        new = []
        for i, (kind, topic, qos) in enumerate(self.endpoints):
            ours_subscribes = kind == "subscription"
            count = node.count_publishers(topic) if ours_subscribes else node.count_subscribers(topic)
            if self._peer_counts.get(i) == count:
                continue
            self._peer_counts[i] = count
            peers = node.get_publishers_info_by_topic(topic) if ours_subscribes else node.get_subscriptions_info_by_topic(topic)
            for peer in peers:
                key = (i, bytes(peer.endpoint_gid))
                pub_qos, sub_qos = (peer.qos_profile, qos) if ours_subscribes else (qos, peer.qos_profile)
                compatibility, reason = qos_check_compatible(pub_qos, sub_qos)
                if compatibility != QoSCompatibility.ERROR or key in self._reported:
                    continue
                self._reported.add(key)
                who = (peer.node_namespace.rstrip("/") + "/" + peer.node_name) if peer.node_name else "a node"
                problem = (f"the {'publisher' if ours_subscribes else 'subscription'} of {who} on {topic} cannot "
                           f"match this node's {kind} (reliability {qos.reliability.name.lower()}, durability "
                           f"{qos.durability.name.lower()}), so no message passes between them: {_reason(reason)}; "
                           "give it the QoS docs/ros.md lists for this topic")
                self.problems.append(problem)
                new.append(problem)
        return new


def _reason(text: str) -> str:
    """rclpy's 'ERROR: Volatile publisher and transient local subscription;' -> the middle."""
    text = text.strip()
    return text[len("ERROR:"):].strip().rstrip(";") if text.startswith("ERROR:") else text.rstrip(";")


# --- node base ------------------------------------------------------------------------------------
class SyncedFrameInputs:
    """Image/depth/camera_info/gripper-state callbacks shared by the policy and Flow2Action nodes:
    frames pass through `self.sync` (FrameSync) and each complete frame goes to `self.on_frame`,
    which checks it with `self.frame_problem` first."""

    K = None
    info_size: tuple[int, int] | None = None  # (W, H) of the newest camera_info

    def _on_info(self, msg) -> None:
        from sof_ros.ros import conversions as cv

        try:
            self.K = cv.camera_info_to_K(msg)
        except cv.ConversionError as exc:
            self.log_reason("input", str(exc), "warning")
            return
        first = self.info_size is None
        self.info_size = (int(msg.width), int(msg.height))
        held, self._held_frame = getattr(self, "_held_frame", None), None
        if first and held is not None:
            self.on_frame(held)

    def _deliver(self, frame: "Frame") -> None:
        """A complete frame -> `on_frame`; frames before the first camera_info are held (the newest
        one), not rejected: camera_info and image travel on separate topics, so the first image often
        overtakes the first camera_info, and answering it with a stop made what the arm did first
        depend on that race."""
        if self.info_size is None:
            self._held_frame = frame
            self.log_reason("input", f"holding frames until the first camera_info on {self.p.camera_info_topic}",
                            "info", every_s=10.0)
            return
        self.on_frame(frame)

    def frame_problem(self, frame: "Frame") -> str | None:
        """Why `frame` must not drive the arm, or None: its depth must match the image, the image
        its camera_info, and both the frame size the checkpoint was trained on (the policy's
        `frame_size`, when it says)."""
        h, w = frame.rgb.shape[:2]
        if frame.depth is not None and frame.depth.shape[:2] != (h, w):
            dh, dw = frame.depth.shape[:2]
            return (f"depth {dw}x{dh} does not match the image {w}x{h}; publish depth aligned to the colour "
                    "image (realsense2_camera: aligned_depth_to_color, align_depth.enable:=true)")
        for name, mask in frame.masks.items():
            if mask.shape[:2] != (h, w):
                mh, mw = mask.shape[:2]
                return (f"{name} {mw}x{mh} does not match the image {w}x{h}; publish the mask at the size of the "
                        "frames this node receives (after the camera node's working_width/working_height)")
        if self.info_size is None:
            return f"no camera_info yet on {self.p.camera_info_topic}; frames are checked against it"
        if self.info_size != (w, h):
            return (f"image {w}x{h} but camera_info says {self.info_size[0]}x{self.info_size[1]}; "
                    "image and camera_info must come from the same stream")
        expected = getattr(self.agent, "frame_size", None)
        if expected is not None and tuple(expected) != (w, h):
            return (f"image {w}x{h} but the checkpoint was trained on {expected[0]}x{expected[1]} frames; set the "
                    f"camera node's working_width/working_height to {expected[0]}/{expected[1]}")
        return None

    def _on_grip_state(self, msg) -> None:
        self.gripper_state = float(msg.data) if np.isfinite(msg.data) else None

    def _on_joint_states(self, msg) -> None:
        """Gripper opening from the finger joints of a sensor_msgs/JointState (robot.gripper_joint_names):
        sum of their positions / robot.gripper_max_opening, clipped to [0, 1]. A message without
        them (another publisher on the topic, the arm alone) is skipped; a non-finite one clears it."""
        from sof_ros.ros.conversions import gripper_opening

        opening = gripper_opening(msg, self.p.robot.gripper_joint_names, self.p.robot.gripper_max_opening)
        if isinstance(opening, str):
            self.log_reason("input", opening, "warning", every_s=30.0)
            return
        self.gripper_state = opening

    def _on_image(self, msg) -> None:
        from sof_ros.ros import conversions as cv

        try:
            frame = self.sync.add_rgb(cv.stamp_to_ns(msg.header.stamp), cv.msg_to_rgb(msg), msg.header.frame_id)
        except cv.ConversionError as exc:
            self.log_reason("input", f"dropping frame: {exc}", "warning")
            return
        if frame is not None:
            self._deliver(frame)
        elif self.sync.starved():
            topics = {"depth": "depth_topic", **{m: f"{m}_topic" for m in self.sync.masks}}
            waiting = ", ".join(f"{c} ({getattr(self.p, topics[c], '?')})" for c in self.sync.starved())
            self.log_reason("input", f"frames are dropped waiting for {waiting}: is anything publishing it, with the "
                                     "frames' stamps?", "warning", every_s=10.0)

    def _on_mask(self, name: str, msg) -> None:
        """A mask image (mono8) for the frame with its stamp: `name` is its FrameSync channel."""
        from sof_ros.ros import conversions as cv

        try:
            frame = self.sync.add_mask(name, cv.stamp_to_ns(msg.header.stamp), cv.msg_to_mask(msg))
        except cv.ConversionError as exc:
            self.log_reason("input", f"dropping {name}: {exc}", "warning")
            return
        if frame is not None:
            self._deliver(frame)

    def _on_depth(self, msg) -> None:
        from sof_ros.ros import conversions as cv

        try:
            frame = self.sync.add_depth(cv.stamp_to_ns(msg.header.stamp), cv.msg_to_depth(msg))
        except cv.ConversionError as exc:
            self.log_reason("input", f"dropping depth: {exc}", "warning")
            return
        if frame is not None:
            self._deliver(frame)


class QosWatchedNode(Node):
    """rclpy Node whose publishers and subscriptions are created without rclpy's default QoS event
    handlers and checked by a QosWatch on a timer instead (see QosWatch for why)."""

    def __init__(self, node_name: str, **kwargs):
        self._qos_watch = QosWatch()  # before Node.__init__, which creates /parameter_events
        super().__init__(node_name, **kwargs)
        self.create_timer(QOS_CHECK_PERIOD_S, self._check_qos)

    def create_subscription(self, msg_type, topic, callback, qos_profile, **kwargs):
        kwargs.setdefault("event_callbacks", SubscriptionEventCallbacks(use_default_callbacks=False))
        sub = super().create_subscription(msg_type, topic, callback, qos_profile, **kwargs)
        self._qos_watch.add("subscription", sub.topic_name, sub.qos_profile)
        return sub

    def create_publisher(self, msg_type, topic, qos_profile, **kwargs):
        kwargs.setdefault("event_callbacks", PublisherEventCallbacks(use_default_callbacks=False))
        pub = super().create_publisher(msg_type, topic, qos_profile, **kwargs)
        self._qos_watch.add("publisher", pub.topic_name, pub.qos_profile)
        return pub

    def _check_qos(self) -> None:
        for problem in self._qos_watch.check(self):
            self.get_logger().warning(f"[qos] {problem}")


class SofNode(QosWatchedNode):
    """rclpy Node + typed parameters + reason logging. Subclasses set PARAMS and DEFAULT_NAME."""

    PARAMS: type = object
    DEFAULT_NAME = "sof_node"

    def __init__(self, node_name: str | None = None, **kwargs):
        super().__init__(node_name or self.DEFAULT_NAME, **kwargs)
        self.p = declare_params(self, self.PARAMS)
        self._last_reason: dict[tuple[str, str], float] = {}

    def now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def log_reason(self, channel: str, reason: str, level: str = "info", every_s: float = 5.0) -> None:
        """Log `reason` on `channel` when its kind (the text before the first ':') is new, then at
        most every `every_s` while it recurs -- alternating reasons, or reasons carrying changing
        numbers ('stale frame: age 0.61 s'), are logged once per period, not at the control rate."""
        now = time.monotonic()
        key = (channel, reason.split(":")[0])
        last = self._last_reason.get(key)
        if last is not None and now - last < every_s:
            return
        self._last_reason[key] = now
        if len(self._last_reason) > 512:
            for k in sorted(self._last_reason, key=self._last_reason.get)[:256]:
                del self._last_reason[k]
        text, log = f"[{channel}] {reason}", self.get_logger()
        # one call site per severity: rclpy refuses a call site whose severity changes between calls
        if level == "debug":
            log.debug(text)
        elif level == "info":
            log.info(text)
        elif level == "warning":
            log.warning(text)
        else:
            log.error(text)

    def close(self) -> None:
        """Release non-ROS resources (files, devices, simulators). Safe to call twice."""


# --- agent ----------------------------------------------------------------------------------------
def load_agent(ap: P.AgentParams, robot_name: str = ""):
    """The node's policy: a registered row (sof_ros.policies.ROWS) or a module:Class, loaded from
    agent.checkpoint. A checkpoint trained for another arm than `robot_name` is refused
    (sof_ros.embodiment)."""
    from sof_ros.embodiment import check_embodiment, checkpoint_problem
    from sof_ros.policies import load_policy

    if ap.torch_threads > 0:
        try:
            import torch

            torch.set_num_threads(ap.torch_threads)
        except ImportError:
            pass
    problem = None if ":" in ap.policy else checkpoint_problem(ap.checkpoint)
    if problem:
        raise SofError(f"{problem} (working directory {os.getcwd()})")
    if robot_name and ":" not in ap.policy:
        check_embodiment(ap.checkpoint, robot_name)
    return load_policy(ap.policy, ap.checkpoint, device=ap.device)


def make_agent_input(rgb, depth=None, intrinsics=None, cam_pose=None, ee_pos=None, gripper=None,
                     object_mask=None, robot_mask=None) -> AgentInput:
    """What the node knows at one frame; a gripper state that never arrived reads as 0 (as trained)."""
    return AgentInput(rgb=rgb, depth=depth, intrinsics=intrinsics, cam_pose=cam_pose, ee_pos=ee_pos,
                      gripper=0.0 if gripper is None else float(gripper), object_mask=object_mask, robot_mask=robot_mask)


# --- frame synchronisation ------------------------------------------------------------------------
@dataclass
class Frame:
    stamp_ns: int
    rgb: np.ndarray
    depth: np.ndarray | None = None
    frame_id: str = ""
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # FrameSync.masks channel -> (H, W) bool
    # The last frame again, same stamp: the sim bridge's lockstep re-publishes a frame nobody answered.
    # Not a new control step -- a node that counted it as one acted twice on one simulator state.
    repeat: bool = False


@dataclass
class FrameSync:
    """Pairs a colour image with the depth image and the masks (`masks`: channel names, e.g.
    object_mask) whose stamps differ from it by at most `tolerance_ns` (nearest first; 0 = identical
    stamps, as the camera node and the sim bridge publish them; a driver such as realsense2_camera may
    stamp the aligned depth a few ms off the colour frame). A frame is complete once every channel has
    arrived; it carries the colour stamp. With `use_depth` False and no masks, every colour image is
    a frame on its own. A colour image with the stamp of the last frame is that frame again
    (`Frame.repeat`): the sim bridge re-publishes an unanswered frame under its own stamp."""

    use_depth: bool = True
    keep: int = 8
    tolerance_ns: int = 0
    masks: tuple[str, ...] = ()
    _bufs: dict[str, dict[int, Any]] = field(default_factory=dict)
    _done: dict[str, int] = field(default_factory=dict)
    _last: Frame | None = None

    @property
    def channels(self) -> tuple[str, ...]:
        return ("rgb",) + (("depth",) if self.use_depth else ()) + tuple(self.masks)

    def add_rgb(self, stamp_ns: int, rgb: np.ndarray, frame_id: str = "") -> Frame | None:
        return self._add("rgb", stamp_ns, (rgb, frame_id))

    def add_depth(self, stamp_ns: int, depth: np.ndarray) -> Frame | None:
        return self._add("depth", stamp_ns, depth) if self.use_depth else None

    def add_mask(self, name: str, stamp_ns: int, mask: np.ndarray) -> Frame | None:
        return self._add(name, stamp_ns, mask) if name in self.masks else None

    def _add(self, channel: str, s: int, data: Any) -> Frame | None:
        if channel == "rgb" and self._last is not None and s == self._last.stamp_ns:
            return replace(self._last, repeat=True)
        if s <= self._done.get(channel, -1):
            return None  # older than what the last frame used: it can never complete a frame
        bufs = {c: self._bufs.setdefault(c, {}) for c in self.channels}
        bufs[channel][s] = data
        rgb_stamps = [s] if channel == "rgb" else \
            sorted((r for r in bufs["rgb"] if abs(r - s) <= self.tolerance_ns), key=lambda r: (abs(r - s), r))
        for r in rgb_stamps:  # the colour frames this message may complete, nearest first
            match = {"rgb": r}
            for c in self.channels[1:]:
                near = [o for o in bufs[c] if abs(o - r) <= self.tolerance_ns]
                if not near:
                    break
                match[c] = min(near, key=lambda o: (abs(o - r), o))
            else:
                return self._emit(match)
        for buf in bufs.values():
            while len(buf) > self.keep:
                del buf[min(buf)]
        return None

    def starved(self) -> list[str]:
        """The channels colour frames are being dropped for: nothing of theirs is waiting while
        `keep` colour images are (empty while frames complete)."""
        if len(self._bufs.get("rgb", {})) < self.keep:
            return []
        return [c for c in self.channels[1:] if not self._bufs.get(c)]

    def _emit(self, match: dict[str, int]) -> Frame:
        got = {c: self._bufs[c].pop(t) for c, t in match.items()}
        for c, t in match.items():
            self._done[c] = t
            for k in [k for k in self._bufs[c] if k <= t]:  # anything older can never complete
                del self._bufs[c][k]
        rgb, fid = got["rgb"]
        self._last = Frame(match["rgb"], rgb, got.get("depth"), fid, {c: got[c] for c in self.masks})
        return self._last


class PoseCache:
    """End-effector positions by stamp: the one taken with a frame (same stamp) if it arrived, else
    the newest."""

    def __init__(self, keep: int = 32):
        self.keep = keep
        self._by_stamp: dict[int, np.ndarray] = {}
        self.latest: np.ndarray | None = None

    def add(self, stamp_ns: int, pos: np.ndarray) -> None:
        self.latest = pos
        self._by_stamp[stamp_ns] = pos
        while len(self._by_stamp) > self.keep:
            del self._by_stamp[min(self._by_stamp)]

    def at(self, stamp_ns: int) -> np.ndarray | None:
        return self._by_stamp.get(stamp_ns, self.latest)


# --- main -----------------------------------------------------------------------------------------
def die_with_parent() -> None:
    """Linux: SIGINT this process when the process named by $SOF_ROS_PARENT_PID dies, however it
    died (PR_SET_PDEATHSIG); if it is already gone, exit now. Nothing without the variable (ros2
    launch manages its own nodes)."""
    from sof_ros.ros.dds import PARENT_PID_ENV

    parent = os.environ.get(PARENT_PID_ENV, "")
    if not parent.isdigit() or not sys.platform.startswith("linux"):
        return
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # inherited from a starter run as a background job of a non-interactive shell (or nohup): the
        # death signal, and sof-bringup's stop, would be ignored and the node outlive its killed starter
        signal.signal(signal.SIGINT, signal.default_int_handler)
    from sof_ros.procs import parent_death_signal

    if not parent_death_signal(signal.SIGINT):
        return
    if os.getppid() != int(parent):  # died before the line above: nobody would stop this node
        raise SystemExit(f"the process that started this node ({parent}) is gone; not starting")


class StopRequest:
    """SIGINT / SIGTERM while the node spins ask it to stop after the callback that is running, not
    inside it: a KeyboardInterrupt (or rclpy's context shutdown) raised at an arbitrary bytecode can
    cut the recorder's MCAP writer mid-record and leave any node's state half-updated before its
    close(); rclpy's shutdown also ended nodes with an RCLError traceback. Before spinning
    (construction) and on a second signal, the signal raises KeyboardInterrupt as Python's default
    does, so a node stuck in a callback or in a long start still stops (the recorder then closes its
    file: a stop during its start had left one without footer, which sof-demo failed to read)."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self):
        self.requested = False
        self.spinning = False
        for name in self.SIGNALS:
            signal.signal(getattr(signal, name), self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        if self.spinning and not self.requested:
            self.requested = True
            return
        raise KeyboardInterrupt

    def spin(self, executor, poll_s: float = 0.1) -> None:
        """Spin until a stop is requested; poll_s bounds how late a signal is seen while idle."""
        self.spinning = True
        try:
            while not self.requested and executor.context.ok():
                executor.spin_once(timeout_sec=poll_s)
        finally:
            self.spinning = False


def run_node(node_cls: type, args: list[str] | None = None, executor_threads: int = 1) -> int:
    """Console entry: rclpy.init, construct the node, spin until Ctrl-C / SIGTERM, clean up."""
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from sof_ros.ros import dds

    die_with_parent()
    stop = StopRequest()
    if hasattr(signal, "SIGUSR1"):  # sof-bringup asks a node that hangs on shutdown where it hangs
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:  # before rclpy.init: large camera frames over shared memory; DDS on this machine unless SOF_ROS_NETWORK=lan
        dds.configure()
    except SofError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # rclpy's own handlers would shut the context down at the signal, under a running callback
    rclpy.init(args=sys.argv if args is None else args, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    try:
        node = node_cls()
        ex = MultiThreadedExecutor(num_threads=executor_threads) if executor_threads > 1 else SingleThreadedExecutor()
        ex.add_node(node)
        stop.spin(ex)
    except SofError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
