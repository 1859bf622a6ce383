"""Flow2Action node: current flow plan + frame (+ depth, camera model, end-effector pose) ->
end-effector commands, always through `sof_ros.safety.SafetyFilter`.

For every complete frame it calls `agent.act(plan, obs, step_in_plan)` (step_in_plan = frames since
the frame the plan was made from), turns the action [dx, dy, dz, grip] into
  twist   linear = action[:3] * robot.metres_per_action_unit * robot.control_rate_hz  (m/s),
          TwistStamped in robot.base_frame, header stamp = publish time (MoveIt Servo drops a twist
          whose stamp is older than its incoming_command_timeout) -- for MoveIt Servo's
          delta_twist_cmds, or the sim bridge;
  info    command_info (conversions.CommandInfo): the twist's stamp beside the capture stamp of the
          frame it answers and of the plan it came from (latency, the sim bridge's lockstep);
  gripper std_msgs/Float64 = action[3] in [-1 open, +1 close];
  pose    (output_mode pose|both) PoseStamped target = end effector + pose_lookahead_steps actions
          (the learning-free rows: the solver's current 3-D subgoal, `policy.pose_target`),
          optionally planned + executed through moveit_py (lazy import, `use_moveit_py`).

Object / robot masks (object_mask_topic, robot_mask_topic; mono8, the frame's stamp): when set, a
frame waits for them (FrameSync) and the learning-free rows track the masked object, as in the
offline eval (sim: the sim bridge's segmentation); unset, the solver falls back to the plan's moving
pixels that are not the arm (docs/learning_free.md).

MoveIt Servo (Jazzy): the node switches Servo to TWIST commands at start-up through
servo_command_type_service (moveit_msgs/srv/ServoCommandType, retried until Servo answers). Servo
drops a twist once now - stamp >= its incoming_command_timeout (default 0.1 s); a twist comes every
1/robot.control_rate_hz (0.1 s at 10 Hz), so set incoming_command_timeout to 2-3 control periods
(0.25-0.3 s at 10 Hz) or Servo halts between commands; our own command_timeout_s stops it later.

A new plan takes effect at once: the latest frame, already answered with the previous plan while
this one was computed (wait_for_replan false), is answered again with the new one. With
wait_for_replan (simulation), a frame waiting for a plan is named on plan_request_topic, and a frame
published again under its stamp (the sim bridge's lockstep, `Frame.repeat`) is no new control step.

Fail safe: anything odd -> zero twist, never motion. A watchdog timer publishes zero twists while
a frame / plan / end-effector pose / command is stale; a frame whose size disagrees with its depth,
its camera_info or the checkpoint is rejected (so is a mask of another size); std_msgs/Bool true on the e-stop topic latches a stop
until true is published on the clear topic -- on disk too (estop_state_dir, fsynced before the stop
is acknowledged on the status topic), so a restarted node starts e-stopped whatever the e-stop topic
holds by then. Every decision's reason is published on the status topic and logged when it changes.
"""
from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass

import numpy as np
from geometry_msgs.msg import PoseStamped, TwistStamped
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, Float64, Float64MultiArray, Header, Int64MultiArray, String

from sof_ros.errors import SofError
from sof_ros.policies import FlowPlan
from sof_ros.ros import conversions as cv
from sof_ros.ros.base import (Frame, FrameSync, PoseCache, SofNode, SyncedFrameInputs, command_qos, latched_qos, load_agent,
                              make_agent_input, run_node, sensor_qos)
from sof_ros.ros.params import MASKS, Flow2ActionNodeParams, watchdog_timeouts
from sof_ros.safety import OK, EstopStore, SafeCommand, SafetyFilter

OUTPUT_MODES = ("twist", "pose", "both")


@dataclass
class ActivePlan:
    plan: FlowPlan
    stamp_ns: int
    seq: int | None  # sequence number of the frame it was planned on (None until that frame is seen)


class Flow2ActionNode(SyncedFrameInputs, SofNode):
    PARAMS = Flow2ActionNodeParams
    DEFAULT_NAME = "sof_flow2action"

    def __init__(self, node_name: str | None = None, agent=None, **kwargs):
        super().__init__(node_name, **kwargs)
        p: Flow2ActionNodeParams = self.p
        if p.output_mode not in OUTPUT_MODES:
            raise SofError(f"output_mode must be one of {OUTPUT_MODES}, got '{p.output_mode}'")
        if p.robot.control_rate_hz <= 0 or p.watchdog_rate_hz <= 0:
            raise SofError("robot.control_rate_hz and watchdog_rate_hz must be > 0")
        try:
            self.safety = SafetyFilter(p.robot.limits(), watchdog_timeouts(p), monitored=("frame", "plan", "pose"))
        except ValueError as exc:
            raise SofError(f"robot limits: {exc}") from None
        self.estop_store = EstopStore(estop_state_path(p.estop_state_dir, self.get_fully_qualified_name()))
        held = self.estop_store.load()
        try:  # also proves the directory writable before the arm can move
            self.estop_store.save(held)
        except OSError as exc:
            raise SofError(f"cannot write the e-stop state file {self.estop_store.path} ({exc}); an e-stop must survive "
                           "a restart of this node: set estop_state_dir to a writable directory") from None
        self._persisted = held
        if held is not None:
            self.safety.estop(f"held from before this node started ({held}); publish true on {p.estop_clear_topic} to clear")
            self.get_logger().error(f"[estop] e-stop latched before this node started: {held}; the arm stays stopped "
                                    f"until true is published on {p.estop_clear_topic}")
        self.agent = agent if agent is not None else load_agent(p.agent, p.robot.name)
        self.replan_every = int(p.agent.replan_every or getattr(self.agent, "replan_every", 0))
        if self.replan_every <= 0:
            raise SofError("replan_every must be > 0 (parameter agent.replan_every or the agent's own)")
        self.dt = 1.0 / p.robot.control_rate_hz

        sq, cq = sensor_qos(p.qos.sensor_depth), command_qos(p.qos.command_depth)
        self.pub_twist = self.create_publisher(TwistStamped, p.twist_topic, cq)
        self.pub_grip = self.create_publisher(Float64, p.gripper_topic, cq)
        self.pub_pose = self.create_publisher(PoseStamped, p.pose_target_topic, cq)
        self.pub_status = self.create_publisher(String, p.status_topic, cq)
        self.pub_info = self.create_publisher(Int64MultiArray, p.command_info_topic, cq)
        self.pub_fresh = self.create_publisher(String, p.fresh_plan_topic, cq) if p.fresh_plan_topic else None
        self.pub_request = self.create_publisher(Header, p.plan_request_topic, cq) \
            if p.plan_request_topic and p.wait_for_replan else None
        self._wanted_fresh = False
        masks = tuple(name for name in MASKS if getattr(p, f"{name}_topic"))
        self.sync = FrameSync(use_depth=bool(p.depth_topic), tolerance_ns=int(p.sync_tolerance_s * 1e9), masks=masks)
        self.create_subscription(CameraInfo, p.camera_info_topic, self._on_info, sq)
        self.create_subscription(PoseStamped, p.camera_pose_topic, self._on_cam_pose, latched_qos())
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
        for name in masks:  # a frame is complete with its masks (FrameSync)
            self.create_subscription(Image, getattr(p, f"{name}_topic"), lambda msg, n=name: self._on_mask(n, msg), sq)
        self.create_subscription(Int64MultiArray, p.tokens_topic, self._on_tokens, cq)
        self.create_subscription(Image, p.flow_plan_topic, self._on_flow_plan, cq)
        self.create_subscription(Float64MultiArray, p.action_chunk_topic, self._on_actions, cq)
        # a latched e-stop published before this node started still applies; a stale *clear* must not
        self.create_subscription(Bool, p.estop_topic, self._on_estop, latched_qos())
        self.create_subscription(Bool, p.estop_clear_topic, self._on_estop_clear, cq)

        self.K = None
        self.cam_pose = None
        self.ee_pos = None  # newest: what the safety filter enforces the workspace on
        self.ee = PoseCache()  # by stamp: what the agent sees with each frame
        self.gripper_state = None
        self.plan: ActivePlan | None = None
        self._parts: dict[int, dict] = {}
        self._seq = 0
        self._stamp_seq: dict[int, int] = {}
        self.latest: Frame | None = None
        self._answered_stamp = 0  # capture stamp of the last frame a command answered
        self.commands_published = 0
        self.zero_twists_published = 0
        self.last_reason = "starting"
        self.estop_topic_last: bool | None = None  # the newest value on the e-stop topic (None: none yet)
        self._moveit = _MoveItPyTarget(self, p) if p.use_moveit_py and p.output_mode != "twist" else None
        self.servo = ServoCommandTypeSwitch(self, p.servo_command_type_service) \
            if p.servo_command_type_service and p.output_mode != "pose" else None
        self.create_timer(1.0 / p.watchdog_rate_hz, self._watchdog)
        self.get_logger().info(
            f"robot {p.robot.name}: {p.output_mode} in {p.robot.base_frame} at {p.robot.control_rate_hz:g} Hz, "
            f"box {p.robot.workspace_min}..{p.robot.workspace_max} m, <= {p.robot.max_linear_speed} m/s")

    # --- inputs ------------------------------------------------------------------------------
    def _on_cam_pose(self, msg: PoseStamped) -> None:
        try:
            self.cam_pose = cv.pose_msg_to_matrix(msg.pose)
        except cv.ConversionError as exc:
            self.log_reason("input", f"camera pose: {exc}", "warning")

    def _on_ee(self, msg: PoseStamped) -> None:
        fid = msg.header.frame_id
        if fid and fid != self.p.robot.base_frame:
            self.log_reason("input", f"ignoring end-effector pose in '{fid}', expected '{self.p.robot.base_frame}': set "
                                     f"robot.base_frame (or robot.name: panda -> panda_link0, fr3 -> fr3_link0)", "warning")
            return
        pos = np.array([msg.pose.position.x, msg.pose.position.y, msg.pose.position.z])
        if not np.all(np.isfinite(pos)):  # not a heartbeat: a stream of these stops the arm
            self.log_reason("input", f"rejected end-effector pose: non-finite position {pos.tolist()}", "warning")
            return
        self.ee_pos = pos
        self.ee.add(cv.stamp_to_ns(msg.header.stamp), pos)
        self.safety.heartbeat("pose")

    # --- plans -------------------------------------------------------------------------------
    def _on_tokens(self, msg: Int64MultiArray) -> None:
        try:
            tokens, stamp, steps, size, per_step = cv.msg_to_tokens(msg)
        except cv.ConversionError as exc:
            self.log_reason("plan", f"ignoring tokens: {exc}", "warning")
            return
        self._add_part(stamp, tokens=tokens, steps=steps, size=size, frames_per_step=per_step)

    def _on_flow_plan(self, msg: Image) -> None:
        self._add_part(cv.stamp_to_ns(msg.header.stamp), flow_msg=msg)

    def _on_actions(self, msg: Float64MultiArray) -> None:
        try:
            actions, stamp = cv.msg_to_actions(msg)
        except cv.ConversionError as exc:
            self.log_reason("plan", f"ignoring action chunk: {exc}", "warning")
            return
        self._add_part(stamp, actions=actions)

    def _add_part(self, stamp: int, **part) -> None:
        if self.plan is not None and stamp <= self.plan.stamp_ns:
            return  # older than the plan in use
        parts = self._parts.setdefault(stamp, {})
        parts.update(part)
        if not {"tokens", "flow_msg", "actions"} <= set(parts):
            for s in sorted(self._parts)[:-4]:
                del self._parts[s]
            return
        del self._parts[stamp]
        for s in [s for s in self._parts if s < stamp]:
            del self._parts[s]
        try:
            flow = cv.msg_to_flow_plan(parts["flow_msg"], parts["steps"])
        except cv.ConversionError as exc:
            self.log_reason("plan", f"ignoring plan: {exc}", "warning")
            return
        if not np.all(np.isfinite(flow)) or (parts["actions"] is not None and not np.all(np.isfinite(parts["actions"]))):
            self.log_reason("plan", "ignoring plan: its flow or action chunk contains NaN / inf", "warning")
            return
        plan = FlowPlan(tokens=parts["tokens"], flow=flow, image_size=parts["size"], actions=parts["actions"],
                        frames_per_step=parts.get("frames_per_step", 1))
        if plan.steps == 0:
            self.log_reason("plan", "ignoring plan: it has neither flow steps nor an action chunk", "warning")
            return
        self.plan = ActivePlan(plan, stamp, self._seq_of(stamp))
        self.safety.heartbeat("plan")
        if self.latest is not None and self.latest.stamp_ns >= stamp:
            # act on the newest frame with the new plan now, not one frame period later: it was
            # answered with the previous plan while this one was computed (or is waiting for it)
            self.on_frame(self.latest, new=False)

    def _seq_of(self, stamp: int) -> int | None:
        if stamp in self._stamp_seq:
            return self._stamp_seq[stamp]
        later = [q for s, q in self._stamp_seq.items() if s > stamp]
        return min(later) - 1 if later else None  # planning frame dropped here: the one before

    # --- acting ------------------------------------------------------------------------------
    def on_frame(self, frame: Frame, new: bool = True) -> None:
        if new and frame.repeat and frame.stamp_ns in self._stamp_seq:
            # published again because its answer had not reached the sim bridge in time: not a new control
            # step, and as current as it was (simulated time stood still). Answered already: that answer
            # still counts there. Else (waiting for a plan) try again.
            self.safety.heartbeat("frame")
            if frame.stamp_ns == self._answered_stamp:
                return
            new = False
        if new:
            self._seq += 1
            self._stamp_seq[frame.stamp_ns] = self._seq
            if len(self._stamp_seq) > 256:
                for s in sorted(self._stamp_seq)[:-128]:
                    del self._stamp_seq[s]
            self.latest = frame
        bad = self.frame_problem(frame)
        if bad:  # not a heartbeat either: a stream of bad frames is no frames
            self._publish(SafeCommand.stop(), f"rejected frame: {bad}", frame.stamp_ns)
            return
        if new:
            self.safety.heartbeat("frame")
        plan = self.plan
        if plan is None:
            self._status("waiting for a plan", "debug")
            self._request_plan(frame)
            return
        if plan.seq is None:
            if frame.stamp_ns < plan.stamp_ns:
                self._status("plan is newer than this frame; waiting", "debug")
                return
            plan.seq = self._stamp_seq[frame.stamp_ns] - (0 if frame.stamp_ns == plan.stamp_ns else 1)
        step = self._stamp_seq.get(frame.stamp_ns, self._seq) - plan.seq
        if step < 0:
            return
        if self.p.wait_for_replan and step >= self.replan_every:
            self._status(f"waiting for the re-plan due at step {step}", "debug")
            self._request_plan(frame)
            return
        horizon = plan.plan.steps
        if step >= horizon:
            self._publish(SafeCommand.stop(), f"plan exhausted: step {step} >= {horizon} planned steps; holding still until the next plan",
                          frame.stamp_ns, plan.stamp_ns, step)
            return
        obs = make_agent_input(frame.rgb, depth=frame.depth, intrinsics=self.K, cam_pose=self.cam_pose,
                               ee_pos=self.ee.at(frame.stamp_ns), gripper=self.gripper_state,
                               **{name: frame.masks.get(name) for name in MASKS})
        try:
            action = np.asarray(self.agent.act(plan.plan, obs, step), dtype=np.float64).reshape(-1)
        except Exception as exc:  # a learner failure must stop the arm, not the node
            self._publish(SafeCommand.stop(), f"rejected: act() failed: {type(exc).__name__}: {exc}", frame.stamp_ns,
                          plan.stamp_ns, step)
            return
        self._ask_for_fresh_plan()
        self.command_from_action(action, frame.stamp_ns, plan.stamp_ns, step)

    def command_from_action(self, action: np.ndarray, stamp_ns: int, plan_stamp_ns: int = 0,
                            step: int = -1) -> tuple[SafeCommand, str]:
        """Action [dx, dy, dz, grip] for the frame stamped `stamp_ns` (step `step` of the plan made from
        the frame stamped `plan_stamp_ns`) -> filtered command, published."""
        p = self.p
        if action.shape != (4,) or not np.all(np.isfinite(action)):
            cmd, reason = SafeCommand.stop(), f"rejected: action must be 4 finite numbers, got {action.tolist()}"
            self._publish(cmd, reason, stamp_ns, plan_stamp_ns, step)
            return cmd, reason
        a = np.clip(action, -1.0, 1.0)
        step_m = a[:3] * p.robot.metres_per_action_unit
        cmd, reason = SafeCommand.stop(), OK
        if p.output_mode != "pose":
            cmd, reason = self.safety.filter_twist(step_m / self.dt, np.zeros(3), a[3], self.ee_pos, self.dt)
        if p.output_mode == "pose" or (p.output_mode == "both" and _ok(reason)):
            if self.ee_pos is None:
                tcmd, treason = SafeCommand.stop(), "rejected: no end-effector pose to place a pose target"
            else:
                goal = getattr(self.agent, "pose_target", None)  # rows that solve for 3-D subgoals (learning-free)
                goal = self.ee_pos + step_m * p.pose_lookahead_steps if goal is None else np.asarray(goal, float)
                tcmd, treason = self.safety.filter_target(goal, self.ee_pos, a[3])
            if tcmd.target is not None:
                T = cv.xyzquat_to_matrix(list(tcmd.target) + list(p.robot.target_orientation))
                msg = cv.matrix_to_pose_stamped(T, self.now_ns(), p.robot.base_frame)  # stamped when sent, as the twist
                self.pub_pose.publish(msg)
                if self._moveit is not None:
                    self._moveit.submit(msg)
            if p.output_mode == "pose":
                cmd, reason = tcmd, treason
            elif treason != OK:
                reason = treason if reason == OK else f"{reason}; {treason}"
                if not _ok(treason):
                    cmd = SafeCommand.stop()
        if _ok(reason):
            self.safety.heartbeat("command")
        self._publish(cmd, reason, stamp_ns, plan_stamp_ns, step)
        return cmd, reason

    def _request_plan(self, frame: Frame) -> None:
        """wait_for_replan: a frame waiting for its plan came again (the sim bridge's lockstep timed out):
        name it, so the policy plans on exactly this one -- counting frames on its own, it planned late
        after losing one (a best-effort queue overflowing while its process was descheduled) -- or
        publishes again the plan it made on it (made before this node subscribed, it never came).
        Only on a repeat: in the normal run the plan is on its way, and would be published twice."""
        if self.pub_request is not None and frame.repeat:
            self.pub_request.publish(cv.header(frame.stamp_ns, frame.frame_id))

    def _ask_for_fresh_plan(self) -> None:
        """Once per stall of the agent (its `wants_fresh_plan` turning true), before the command that
        lets the simulator step: the policy node samples its next plan, as sof-eval's agent does."""
        wanted = bool(getattr(self.agent, "wants_fresh_plan", False))
        if wanted and not self._wanted_fresh and self.pub_fresh is not None:
            self.pub_fresh.publish(String(data=str(getattr(self.agent, "last_reason", "") or "fresh plan wanted")))
        self._wanted_fresh = wanted

    def _publish(self, cmd: SafeCommand, reason: str, frame_stamp_ns: int = 0, plan_stamp_ns: int = 0,
                 step: int = -1) -> None:
        """Gripper first, then the twist stamped now (MoveIt Servo measures a command's age from its
        stamp), then the command info naming the frame (0: none, e.g. a watchdog stop) and plan it
        answers and the gripper value sent -- the sim bridge's lockstep and the latency benchmark key
        on that. Zero twists are always published, whatever the mode."""
        p = self.p
        if cmd.gripper is not None:
            self.pub_grip.publish(Float64(data=float(cmd.gripper)))
        now = self.now_ns()
        if p.output_mode != "pose" or cmd.is_zero:
            self.pub_twist.publish(cv.twist_msg(cmd.linear, cmd.angular, now, p.robot.base_frame))
        self.pub_info.publish(cv.command_info_msg(cv.CommandInfo(now, frame_stamp_ns, plan_stamp_ns, step, cmd.is_zero,
                                                                 cmd.gripper)))
        if frame_stamp_ns:
            self._answered_stamp = frame_stamp_ns
        if cmd.is_zero:
            self.zero_twists_published += 1
        else:
            self.commands_published += 1
        self._status(reason, "info" if _ok(reason) else "warning")

    def _status(self, reason: str, level: str) -> None:
        self.last_reason = reason
        self.pub_status.publish(String(data=reason))
        self.log_reason("safety", reason, level)

    # --- watchdog / e-stop ------------------------------------------------------------------
    def _watchdog(self) -> None:
        cmd, reason = self.safety.tick()
        if cmd is not None:
            self._publish(cmd, reason)

    def _on_estop(self, msg: Bool) -> None:
        self.estop_topic_last = bool(msg.data)
        if not msg.data:
            self.log_reason("estop", f"false on {self.p.estop_topic} does not clear the e-stop; publish true on {self.p.estop_clear_topic}")
            return
        cmd, reason = self.safety.estop(f"{self.p.estop_topic} = true")  # stopped from here on, written or not
        if self._persisted is None:
            try:  # on disk before the stop is acknowledged (the status and zero twist below)
                self.estop_store.save(self.safety.estop_reason)
                self._persisted = self.safety.estop_reason
            except OSError as exc:
                reason += f"; NOT saved to {self.estop_store.path} ({exc}): a restart of this node would forget it"
                self.get_logger().error(f"[estop] {reason}")
        self._publish(cmd, reason)

    def _on_estop_clear(self, msg: Bool) -> None:
        if not msg.data:
            return
        try:  # the file first: a clear that is not on disk would come back as a stop after a restart -- fail safe
            self.estop_store.save(None)
            self._persisted = None
        except OSError as exc:
            self._status(f"e-stop NOT cleared: cannot write {self.estop_store.path} ({exc}); fix the directory and "
                         "clear again", "error")
            return
        self._status(self.safety.clear_estop(), "warning")

    def close(self) -> None:
        if self._moveit is not None:
            self._moveit.stop()


def estop_state_path(directory: str, node_name: str) -> str:
    """<directory or $ROS_HOME/sof_ros>/<node name>.estop.json (one file per Flow2Action node)."""
    directory = directory or os.path.join(os.environ.get("ROS_HOME") or os.path.join("~", ".ros"), "sof_ros")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", node_name.strip("/")) or "sof_flow2action"
    return os.path.join(os.path.expanduser(directory), f"{name}.estop.json")


def _ok(reason: str) -> bool:
    return reason == OK or reason.startswith("clamped")


def servo_command_type_srv():
    """moveit_msgs/srv/ServoCommandType (JOINT_JOG=0, TWIST=1, POSE=2 -> bool success); ImportError
    where MoveIt's messages are not installed."""
    from moveit_msgs.srv import ServoCommandType

    return ServoCommandType


class ServoCommandTypeSwitch:
    """MoveIt Servo on Jazzy accepts twists only once its command type is TWIST: call its
    `~/switch_command_type` service at start-up, once a second until it answers success (Servo may
    start after this node). Thin on purpose; without moveit_msgs it only says what to run instead."""

    def __init__(self, node: SofNode, service: str, period_s: float = 1.0):
        self.node, self.service, self.done = node, service, False
        self._pending = None
        try:
            self.srv = servo_command_type_srv()
        except ImportError:
            self.srv = None
            node.get_logger().warning(
                f"[servo] moveit_msgs is not installed, so MoveIt Servo cannot be switched to TWIST commands through "
                f"{service}; Servo ignores twists until it is: ros2 service call {service} "
                "moveit_msgs/srv/ServoCommandType '{command_type: 1}' (or set servo_command_type_service to '' without Servo)")
            return
        self.client = node.create_client(self.srv, service)
        self.timer = node.create_timer(period_s, self._try)
        node.get_logger().info(f"[servo] will switch MoveIt Servo to TWIST commands through {service} once it is up")

    def _try(self) -> None:
        if self.done or self._pending is not None:
            return
        if not self.client.service_is_ready():
            self.node.log_reason("servo", f"waiting for MoveIt Servo's {self.service} to switch it to TWIST commands; "
                                          "twists are ignored by Servo until then", "warning", every_s=10.0)
            return
        req = self.srv.Request()
        req.command_type = getattr(self.srv.Request, "TWIST", 1)
        self._pending = self.client.call_async(req)
        self._pending.add_done_callback(self._answered)

    def _answered(self, future) -> None:
        self._pending = None
        try:
            ok, why = bool(future.result().success), "it answered success = false"
        except Exception as exc:  # the call failed: try again on the next tick
            ok, why = False, f"{type(exc).__name__}: {exc}"
        if ok:
            self.done = True
            self.timer.cancel()
            self.node.get_logger().info(f"[servo] MoveIt Servo switched to TWIST commands ({self.service})")
        else:
            self.node.log_reason("servo", f"switching MoveIt Servo to TWIST through {self.service} failed ({why}); retrying",
                                 "error", every_s=10.0)


def load_moveit_config(path: str) -> dict:
    """The MoveIt configuration dict for MoveItPy(config_dict=...) from a YAML file: the dict itself
    (MoveItConfigsBuilder(...).to_moveit_configs().to_dict() dumped with yaml.safe_dump), or a ROS
    params file holding it under '<node>: ros__parameters:' (or '/**')."""
    import yaml

    if not path:
        raise SofError("use_moveit_py needs moveit_config: a YAML file with the MoveIt configuration (robot_description, "
                       "robot_description_semantic, kinematics, planning pipelines, moveit_cpp); MoveItPy cannot read this "
                       "node's params file. Write one with MoveItConfigsBuilder(...).to_moveit_configs().to_dict()")
    try:
        with open(path, encoding="utf-8") as f:
            cfg = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        raise SofError(f"moveit_config '{path}' cannot be read: {exc}") from None
    if isinstance(cfg, dict) and len(cfg) == 1:
        inner = next(iter(cfg.values()))
        if isinstance(inner, dict) and isinstance(inner.get("ros__parameters"), dict):
            cfg = inner["ros__parameters"]
    if not isinstance(cfg, dict) or not cfg:
        raise SofError(f"moveit_config '{path}' must hold a mapping of MoveIt parameters, got {type(cfg).__name__}")
    return cfg


class _MoveItPyTarget:
    """Pose targets through moveit_py (MoveIt 2 Python API), planned and executed in a worker thread,
    newest target wins, at most pose_rate_hz. Thin on purpose: MoveIt owns collision checking and
    trajectory execution; our SafetyFilter has already clamped the target to the workspace box."""

    def __init__(self, node: Flow2ActionNode, p: Flow2ActionNodeParams):
        try:
            from moveit.planning import MoveItPy
        except ImportError:
            raise SofError("use_moveit_py needs MoveIt 2's moveit_py (ros-<distro>-moveit-py); "
                           "or set use_moveit_py false and consume the pose_target topic") from None
        self.node, self.p = node, p
        self.robot = MoveItPy(node_name=f"{node.get_name()}_moveit_py", config_dict=load_moveit_config(p.moveit_config))
        self.arm = self.robot.get_planning_component(p.robot.moveit_group)
        self._target: PoseStamped | None = None
        self._cv = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="moveit_py", daemon=True)
        self._thread.start()

    def submit(self, target: PoseStamped) -> None:
        with self._cv:
            self._target = target
            self._cv.notify()

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()

    def _loop(self) -> None:
        period = 1.0 / max(self.p.pose_rate_hz, 1e-3)
        while True:
            with self._cv:
                while self._target is None and not self._stop:
                    self._cv.wait()
                if self._stop:
                    return
                target, self._target = self._target, None
            t0 = time.monotonic()
            if self.node.safety.estopped:
                continue
            self.arm.set_start_state_to_current_state()
            self.arm.set_goal_state(pose_stamped_msg=target, pose_link=self.p.robot.moveit_ee_link)
            result = self.arm.plan()
            if not result:
                self.node.log_reason("moveit", "moveit_py planning to the pose target failed", "warning")
            elif not self.node.safety.estopped:
                self.robot.execute(result.trajectory, controllers=[])
            time.sleep(max(0.0, period - (time.monotonic() - t0)))


def main(args: list[str] | None = None) -> int:
    return run_node(Flow2ActionNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
