"""Policy node: (instruction, frame) -> skill tokens -> decoded flow plan.

Plans on the first complete frame after a new instruction and then every `replan_every` frames
(agent.replan_every unless the parameter overrides it; a frame published again under its stamp, the
sim bridge's lockstep, is no new frame), and on the frame Flow2Action names on plan_request_topic
(wait_for_replan: simulation). Every output carries the stamp of the frame
the plan was made from:
  tokens       std_msgs/Int64MultiArray, header block in the data_offset padding (see conversions.py)
  flow_plan    sensor_msgs/Image 32FC2, T flow fields stacked vertically
  action_chunk std_msgs/Float64MultiArray, the (T, 4) actions a learned head predicted at plan time
  plan_image   sensor_msgs/Image rgb8, the plan's point tracks over the frame
  markers      visualization_msgs/MarkerArray, one arrow per moving track (base frame if the camera
               pose is known, else the camera optical frame)
  status       std_msgs/String (transient local): what happens with the current instruction
A failing plan() is logged and publishes nothing: flow2action's plan watchdog then stops the arm.
So does a frame whose size disagrees with its depth, camera_info or the checkpoint.

Instructions: one the checkpoint has no embedding for (was not trained on) is refused, or with
unknown_instruction=warn embedded by the language model -- loaded at start-up then, never inside a
callback -- and planned with a warning. Instructions are logged once per change, shortened and at
most once a second.
"""
from __future__ import annotations

import inspect
import time

import numpy as np
from geometry_msgs.msg import Point, PoseStamped
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import ColorRGBA, Float64, Float64MultiArray, Header, Int64MultiArray, String
from visualization_msgs.msg import Marker, MarkerArray

from sof_ros.errors import SofError
from sof_ros.ros import conversions as cv
from sof_ros.ros import plan_vis
from sof_ros.ros.base import (Frame, FrameSync, PoseCache, SofNode, SyncedFrameInputs, command_qos, latched_qos, load_agent,
                              make_agent_input, run_node, sensor_qos)
from sof_ros.ros.params import PolicyNodeParams

UNKNOWN_INSTRUCTION = ("refuse", "warn")
LOGGED_INSTRUCTION_CHARS = 120


def check_plan(plan) -> str | None:
    """None if `plan` is a well-formed FlowPlan, else what is wrong with it."""
    tokens = np.asarray(getattr(plan, "tokens", None))
    flow = np.asarray(getattr(plan, "flow", None))
    size = getattr(plan, "image_size", None)
    if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
        return f"tokens must be a 1-D integer array, got {tokens.dtype} {tokens.shape}"
    actions = getattr(plan, "actions", None)
    if flow.ndim != 4 or flow.shape[-1] != 2 or (flow.shape[0] < 1 and actions is None):
        return f"flow must be (T, h, w, 2) with T >= 1 (or T = 0 beside an action chunk), got {flow.shape}"
    if not np.all(np.isfinite(flow)):
        return "flow contains NaN / inf"
    if size is None or len(size) != 2 or min(int(size[0]), int(size[1])) <= 0:
        return f"image_size must be (W, H), got {size!r}"
    if actions is not None:
        a = np.asarray(actions)
        if a.ndim != 2 or a.shape[1] != 4 or not np.all(np.isfinite(a)):
            return f"actions must be a finite (T, 4) array, got {a.shape}"
    return None


class PolicyNode(SyncedFrameInputs, SofNode):
    PARAMS = PolicyNodeParams
    DEFAULT_NAME = "sof_policy"

    def __init__(self, node_name: str | None = None, agent=None, **kwargs):
        super().__init__(node_name, **kwargs)
        p: PolicyNodeParams = self.p
        if p.unknown_instruction not in UNKNOWN_INSTRUCTION:
            raise SofError(f"unknown_instruction must be one of {UNKNOWN_INSTRUCTION}, got '{p.unknown_instruction}'")
        from sof_ros.policies.sof import RUNTIMES

        if p.agent.runtime not in RUNTIMES:  # checked here too: a row without warm_up would ignore it silently
            raise SofError(f"agent.runtime must be one of {RUNTIMES}, got '{p.agent.runtime}'")
        self.agent = agent if agent is not None else load_agent(p.agent, p.robot.name)
        if p.unknown_instruction == "warn" and callable(getattr(self.agent, "load_text_encoder", None)):
            t0 = time.perf_counter()  # now, not in the instruction callback (seconds with the executor blocked)
            self.agent.load_text_encoder()
            self.get_logger().info(f"language model for new instructions loaded in {time.perf_counter() - t0:.2f} s")
        warm_up = getattr(self.agent, "warm_up", None)
        if callable(warm_up):  # export / trace / build kernels now, not on the first frame the arm waits for
            t0 = time.perf_counter()
            takes_runtime = "runtime" in inspect.signature(warm_up).parameters
            runtime = warm_up(runtime=p.agent.runtime) if takes_runtime else warm_up()
            note = getattr(self.agent, "runtime_note", "")
            self.get_logger().info(f"policy warmed up in {time.perf_counter() - t0:.2f} s"
                                   + (f"; plans run on {runtime}" if takes_runtime else "") + (f" ({note})" if note else ""))
        self.replan_every = int(p.agent.replan_every or getattr(self.agent, "replan_every", 0))
        if self.replan_every <= 0:
            raise SofError("replan_every must be > 0 (parameter agent.replan_every or the agent's own)")
        sq, cq = sensor_qos(p.qos.sensor_depth), command_qos(p.qos.command_depth)
        self.pub_tokens = self.create_publisher(Int64MultiArray, p.tokens_topic, cq)
        self.pub_flow = self.create_publisher(Image, p.flow_plan_topic, cq)
        self.pub_actions = self.create_publisher(Float64MultiArray, p.action_chunk_topic, cq)
        self.pub_vis = self.create_publisher(Image, p.plan_image_topic, cq)
        self.pub_markers = self.create_publisher(MarkerArray, p.markers_topic, cq)
        self.pub_status = self.create_publisher(String, p.status_topic, latched_qos())
        self.sync = FrameSync(use_depth=bool(p.depth_topic), tolerance_ns=int(p.sync_tolerance_s * 1e9))
        self.create_subscription(String, p.instruction_topic, self._on_instruction, latched_qos())
        if p.fresh_plan_topic:
            self.create_subscription(String, p.fresh_plan_topic, self._on_fresh_plan, cq)
        if p.plan_request_topic:
            self.create_subscription(Header, p.plan_request_topic, self._on_plan_request, cq)
        self.create_subscription(CameraInfo, p.camera_info_topic, self._on_info, sq)
        self.create_subscription(PoseStamped, p.camera_pose_topic, self._on_cam_pose, latched_qos())
        if p.ee_pose_topic:
            self.create_subscription(PoseStamped, p.ee_pose_topic, self._on_ee, sq)
        if p.gripper_state_topic:
            self.create_subscription(Float64, p.gripper_state_topic, self._on_grip_state, sq)
        if p.joint_states_topic:
            self.create_subscription(JointState, p.joint_states_topic, self._on_joint_states, sq)
        # frames last: the executor serves ready subscriptions in creation order, so the pose, gripper
        # and camera_info that came with a frame are in before the frame is acted on
        self.create_subscription(Image, p.image_topic, self._on_image, sq)
        if p.depth_topic:
            self.create_subscription(Image, p.depth_topic, self._on_depth, sq)
        self.instruction = ""
        self._last_instruction = ""
        self._instruction_logged_at, self._instructions_not_logged = -1e9, 0
        self._new_instruction = False
        self._since_plan = 0
        self._latest: Frame | None = None
        self._requested = 0  # stamp of the frame flow2action waits on for a plan (0: none pending)
        self._plan_stamp, self._plan_msgs = 0, ()  # the frame the last plan was made on, and its three messages
        self.K = None
        self.cam_pose = None
        self.ee = PoseCache()
        self.gripper_state = None
        self.plans_published = 0
        self.last_plan_s = float("nan")
        self.get_logger().info(f"re-planning every {self.replan_every} frames; waiting for an instruction on {p.instruction_topic}")

    # --- inputs ------------------------------------------------------------------------------
    def _on_instruction(self, msg: String) -> None:
        text = msg.data.strip()
        if text == self._last_instruction:  # the same again: re-plan now (if it was accepted), nothing to report
            self._new_instruction = bool(self.instruction)
            return
        self._last_instruction = text
        p, shown = self.p, _shorten(text)
        refusal = unknown = None
        if len(text) > p.max_instruction_chars:
            refusal = f"{len(text)} characters, more than max_instruction_chars {p.max_instruction_chars}"
        elif text and not self._knows(text):
            known = getattr(self.agent, "instructions", [])
            if p.unknown_instruction == "refuse":
                refusal = (f"the checkpoint was not trained on it (it knows {len(known)}: "
                           f"{_shorten('; '.join(known))}); set unknown_instruction:=warn to embed and plan it anyway")
            else:
                try:
                    self.agent.prepare_instruction(text)
                    unknown = ("it is not one the checkpoint was trained on: embedded by the language model, planning "
                               "anyway (unknown_instruction=warn)")
                except Exception as exc:  # encoder missing or failing: refuse rather than plan on nothing
                    refusal = f"it could not be embedded: {type(exc).__name__}: {exc}"
        # one status message per instruction: the status topic keeps only the newest
        if refusal:
            self.instruction, self._new_instruction = "", False
            self._report(f"instruction refused, not planning: {shown}: {refusal}", "error")
        elif unknown:
            self.instruction, self._new_instruction = text, True
            self._report(f"instruction {shown}: {unknown}", "warning")
        else:
            self.instruction, self._new_instruction = text, bool(text)
            self._report(f"instruction {shown}: planning" if text else "instruction cleared: planning stops", "info")

    def _on_fresh_plan(self, msg: String) -> None:
        request = getattr(self.agent, "request_fresh_plan", None)
        if request is not None:  # rows without a sampled re-plan ignore it
            request()
            self.log_reason("plan", f"the next plan is a fresh sample: {msg.data}", every_s=10.0)

    def _knows(self, text: str) -> bool:
        knows = getattr(self.agent, "knows_instruction", None)
        return True if knows is None else bool(knows(text))  # an agent that does not say knows everything

    def _report(self, reason: str, level: str) -> None:
        """Status topic (every time) + log (at most one line a second, however fast instructions arrive)."""
        self.pub_status.publish(String(data=reason))
        now = time.monotonic()
        if now - self._instruction_logged_at < 1.0:
            self._instructions_not_logged += 1
            return
        if self._instructions_not_logged:
            reason += f" [{self._instructions_not_logged} instruction changes in between not logged; see {self.p.status_topic}]"
        self._instruction_logged_at, self._instructions_not_logged = now, 0
        self.log_reason("instruction", reason, level, every_s=0.0)

    def _on_cam_pose(self, msg: PoseStamped) -> None:
        try:
            self.cam_pose = cv.pose_msg_to_matrix(msg.pose)
            self._cam_pose_frame = msg.header.frame_id
        except cv.ConversionError as exc:
            self.log_reason("input", f"camera pose: {exc}", "warning")

    def _on_ee(self, msg: PoseStamped) -> None:
        pos = np.array([msg.pose.position.x, msg.pose.position.y, msg.pose.position.z])
        if np.all(np.isfinite(pos)):
            self.ee.add(cv.stamp_to_ns(msg.header.stamp), pos)

    # --- planning ----------------------------------------------------------------------------
    def _on_plan_request(self, msg: Header) -> None:
        """Flow2Action (wait_for_replan) waits on this frame for a plan: plan on it -- now if it is here,
        else when it comes -- or, made already, publish that plan again."""
        stamp = cv.stamp_to_ns(msg.stamp)
        if not self.instruction or stamp < self._plan_stamp:
            return
        if stamp == self._plan_stamp:
            self._send_plan()
            self.log_reason("plan", "published the plan again: flow2action still waits for it", every_s=10.0)
        elif self._latest is not None and self._latest.stamp_ns == stamp:
            self._plan_on(self._latest)
        else:
            self._requested = max(self._requested, stamp)

    def on_frame(self, frame: Frame) -> None:
        if not (frame.repeat and self._latest is not None and frame.stamp_ns == self._latest.stamp_ns):
            self._since_plan += 1  # a repeated frame is no new control step: it must not move the re-plan
        self._latest = frame
        if not self.instruction:
            self.log_reason("plan", "no instruction yet; not planning", every_s=10.0)
            return
        requested = self._requested and frame.stamp_ns >= self._requested
        if self._new_instruction or self._since_plan >= self.replan_every or requested:
            self._plan_on(frame)

    def _plan_on(self, frame: Frame) -> None:
        bad = self.frame_problem(frame)
        if bad:  # nothing is published: flow2action rejects the frame too, and its plan watchdog stops the arm
            self.log_reason("plan", f"not planning on this frame: {bad}", "warning")
            return
        obs = make_agent_input(frame.rgb, depth=frame.depth, intrinsics=self.K, cam_pose=self.cam_pose,
                               ee_pos=self.ee.at(frame.stamp_ns), gripper=self.gripper_state)
        t0 = time.perf_counter()
        try:
            plan = self.agent.plan(obs, self.instruction)
        except Exception as exc:  # the learner must never take the node down; flow2action stops the arm
            self.log_reason("plan", f"plan() failed, publishing nothing: {type(exc).__name__}: {exc}", "error")
            return
        self.last_plan_s = time.perf_counter() - t0
        bad = check_plan(plan)
        if bad:
            self.log_reason("plan", f"agent returned a malformed plan, publishing nothing: {bad}", "error")
            return
        self._since_plan, self._requested = 0, 0
        self._new_instruction = False
        self.publish_plan(plan, frame)

    def publish_plan(self, plan, frame: Frame) -> None:
        p = self.p
        stamp, fid = frame.stamp_ns, frame.frame_id
        flow = np.asarray(plan.flow, dtype=np.float32)
        size = (int(plan.image_size[0]), int(plan.image_size[1]))
        self._plan_stamp = stamp
        self._plan_msgs = (cv.flow_plan_to_msg(flow, stamp, fid), cv.actions_to_msg(getattr(plan, "actions", None), stamp),
                           cv.tokens_to_msg(plan.tokens, stamp, flow.shape[0], size, int(getattr(plan, "frames_per_step", 1))))
        self._send_plan()
        self.plans_published += 1
        # the kind before ':' is fixed, so this is throttled (with the numbers in the key it logged every plan)
        self.log_reason("plan", f"planning OK: {len(plan.tokens)} tokens, {flow.shape[0]} flow steps, "
                                f"{self.last_plan_s * 1e3:.0f} ms", every_s=30.0)
        if flow.shape[0] == 0:  # a row without a flow plan (e.g. bc): nothing to draw
            return
        if self.pub_vis.get_subscription_count():
            vis = plan_vis.overlay(frame.rgb, flow, size, p.marker_stride, p.plan_image_scale, p.marker_min_flow_px,
                                   p.plan_image_gain)
            self.pub_vis.publish(cv.image_to_msg(vis, "rgb8", stamp, fid))
        if self.pub_markers.get_subscription_count() and self.K is not None:
            self.pub_markers.publish(self.markers(flow, size, frame, stamp))

    def _send_plan(self) -> None:
        """The last plan's three messages (flow2action completes a plan on whichever arrives last)."""
        for pub, m in zip((self.pub_flow, self.pub_actions, self.pub_tokens), self._plan_msgs):
            pub.publish(m)

    def markers(self, flow: np.ndarray, size: tuple[int, int], frame: Frame, stamp: int) -> MarkerArray:
        p = self.p
        in_base = self.cam_pose is not None
        arrows = plan_vis.arrows_3d(flow, size, self.K, frame.depth, self.cam_pose if in_base else None,
                                    p.marker_stride, p.marker_min_flow_px, p.marker_default_depth_m)
        out = MarkerArray()
        fid = getattr(self, "_cam_pose_frame", "") if in_base else frame.frame_id
        clear = Marker()
        clear.header = cv.header(stamp, fid)
        clear.ns, clear.action = "sof_plan", Marker.DELETEALL
        out.markers.append(clear)
        for k, (a, b) in enumerate(arrows):
            m = Marker()
            m.header = cv.header(stamp, fid)
            m.ns, m.id, m.type, m.action = "sof_plan", k, Marker.ARROW, Marker.ADD
            m.points = [Point(x=float(a[0]), y=float(a[1]), z=float(a[2])), Point(x=float(b[0]), y=float(b[1]), z=float(b[2]))]
            m.scale.x, m.scale.y, m.scale.z = 0.004, 0.008, 0.01  # shaft diameter, head diameter, head length
            m.color = ColorRGBA(r=1.0, g=0.3, b=0.1, a=0.9)
            m.pose.orientation.w = 1.0
            out.markers.append(m)
        return out


def _shorten(text: str, n: int = LOGGED_INSTRUCTION_CHARS) -> str:
    """'text' quoted, cut to n characters with the full length noted (instructions may be megabytes)."""
    return repr(text) if len(text) <= n else repr(text[:n]) + f"... ({len(text)} characters)"


def main(args: list[str] | None = None) -> int:
    return run_node(PolicyNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
