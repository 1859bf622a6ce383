"""A simulated arm as a ROS robot -- MetaWorld's Sawyer (`sim: metaworld`) or LIBERO's Franka Panda
(`sim: libero`) -- taking the same TwistStamped + gripper commands a real arm's MoveIt Servo would
take, with camera topics like a real RGB-D camera, joint states, end-effector pose and success, and the
segmentation of the task's objects and of the arm's hand (mono8 masks, the frame's stamp: what a
segmentation node gives a real robot's learning-free Flow2Action).

Twist -> action: both simulators move the end-effector (MetaWorld's mocap, LIBERO's OSC target,
sof_ros.sim.libero_env) by `action * metres_per_action_unit` (0.01 m) per control step, and the
bridge steps at `rate_hz`, so action = v / (metres_per_action_unit * rate_hz), clipped to [-1, 1].
A twist older than `command_timeout_s` counts as zero motion. LIBERO reports every pose in the
robot base frame (panda_link0), so twists, end-effector pose and camera pose are in
robot.base_frame, exactly as a Panda's MoveIt Servo and franka_ros2 use them.

Lockstep (default in config/sim.yaml): after publishing frame k the bridge steps only once the
command answering frame k has arrived -- flow2action's command info names frame k's stamp and the
stamp of its twist, and that twist is here; the gripper applied is the one the command info carries
(the gripper topic has no stamp, and its message may be taken before or after the info's), and the
twist applied is the one the info names, whatever its age or what came after it (a watchdog's zero
twist). A frame left unanswered for `lockstep_timeout_s` (the graph still starting, no instruction
yet, a policy slower than that) is published again under its own stamp, and the simulator does not
step: the nodes know it for the same frame (`base.Frame.repeat`), not a new control step, and an
answer arriving late still counts. The state sequence depends only on the commands, never on how
fast the CPU runs the graph (stepping with a zero command made the demo's trajectory depend on the
machine's load; re-publishing under a new stamp made a slow plan cost a plan step, and Flow2Action
act twice on one state, under load only).
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from geometry_msgs.msg import PoseStamped, TwistStamped
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, Float64, Int32, Int64MultiArray, String

from sof_ros.errors import SofError
from sof_ros.ros import conversions as cv
from sof_ros.ros.base import SofNode, command_qos, latched_qos, run_node, sensor_qos
from sof_ros.ros.params import MASKS, SimBridgeParams

TWISTS_KEPT = 16  # twists by stamp: the one a late command info names is among them


class SimBridgeNode(SofNode):
    PARAMS = SimBridgeParams
    DEFAULT_NAME = "sof_sim_bridge"

    def __init__(self, node_name: str | None = None, **kwargs):
        super().__init__(node_name, **kwargs)
        p: SimBridgeParams = self.p
        if p.rate_hz <= 0:
            raise SofError(f"rate_hz must be > 0, got {p.rate_hz}")
        sq, cq, lq = sensor_qos(p.qos.sensor_depth), command_qos(p.qos.command_depth), latched_qos()
        self.pub_image = self.create_publisher(Image, p.image_topic, sq)
        self.pub_depth = self.create_publisher(Image, p.depth_topic, sq)
        self.pub_info = self.create_publisher(CameraInfo, p.camera_info_topic, sq)
        self.pub_joints = self.create_publisher(JointState, p.joint_states_topic, sq)
        self.pub_ee = self.create_publisher(PoseStamped, p.ee_pose_topic, sq)
        self.pub_grip_state = self.create_publisher(Float64, p.gripper_state_topic, sq)
        self.pub_cam_pose = self.create_publisher(PoseStamped, p.camera_pose_topic, lq)
        self.pub_success = self.create_publisher(Bool, p.success_topic, lq)
        self.pub_steps = self.create_publisher(Int32, p.steps_topic, lq)
        self.pub_masks = {name: self.create_publisher(Image, getattr(p, f"{name}_topic"), sq)
                          for name in MASKS if getattr(p, f"{name}_topic")}
        self.create_subscription(TwistStamped, p.twist_topic, self._on_twist, cq)
        self.create_subscription(Int64MultiArray, p.command_info_topic, self._on_command_info, cq)
        self.create_subscription(Float64, p.gripper_topic, self._on_gripper, cq)
        self.create_subscription(Int32, p.reset_topic, self._on_reset, cq)
        self.create_subscription(String, p.task_topic, self._on_task, cq)

        # MuJoCo's OSMesa contexts belong to the thread that made them current: a renderer created in
        # one executor thread and used or freed in another segfaults. All simulator calls therefore
        # run on this one thread, whichever executor thread the callback came from.
        self._gl = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sof_sim_gl")
        self.arm = None
        self.task = ""
        self.seed = int(p.seed)
        self.episode = 0
        self.frames_published = 0
        self._twist = np.zeros(3)
        self._twist_at = -np.inf  # monotonic arrival time
        self._grip = -1.0  # open
        self._frame_stamp = 0
        self._frame_at = 0.0
        self._answered = True
        self._twists: dict[int, np.ndarray] = {}  # the newest twists by header stamp (flow2action stamps at publish time)
        self._answer_twist = None  # stamp of the twist that answers the current frame, once its info arrived
        self._answer_linear = np.zeros(3)  # that twist's linear velocity, taken when the frame was answered
        self._answer_grip: float | None = None  # the gripper command that info carries (None: none sent)
        self._held_logged = False
        self._load_task(p.task)
        self._reset(self.seed)
        self.timer = self.create_timer(1.0 / p.rate_hz, self._tick)

    # --- task / episode -------------------------------------------------------------------
    def _load_task(self, task: str) -> None:
        from sof_ros.config import SimConfig
        from sof_ros.embodiment import robot_family
        from sof_ros.sim import embodiment, make_arm

        p = self.p
        cfg = SimConfig(backend=p.sim, suite=p.suite, camera=p.camera, width=p.width, height=p.height,
                        max_steps=p.max_steps or 10**9, render_shadows=p.render_shadows, antialias=p.antialias)
        if embodiment(cfg) != robot_family(p.robot.name):
            raise SofError(f"sim '{p.sim}' plays a {embodiment(cfg)} but robot.name is '{p.robot.name}'; "
                           f"use robot.name {'panda' if p.sim == 'libero' else 'metaworld_sawyer'}")
        arm = self._sim(make_arm, task, cfg)
        model = arm.model
        model_joint = getattr(arm, "model_joint", lambda name: name)  # ROS joint name -> simulator joint name
        names = list(p.robot.joint_names) + list(p.robot.gripper_joint_names)
        missing: list[str] = []
        qpos_idx, qvel_idx = [], []
        for n in names:
            try:
                j = model.joint(model_joint(n))
            except KeyError:
                missing.append(n)
                continue
            qpos_idx.append(int(j.qposadr[0]))
            qvel_idx.append(int(j.dofadr[0]))
        if missing:
            self._sim(arm.close)
            raise SofError(f"joints {missing} are not in the {p.sim} model; fix robot.joint_names / robot.gripper_joint_names")
        try:
            self._hand_body = model.body("hand").id
        except KeyError:
            self._hand_body = None
        if self.arm is not None:
            self._sim(self.arm.close)
        self.arm, self.task = arm, arm.task
        self._joint_names, self._qpos_idx, self._qvel_idx = names, qpos_idx, qvel_idx
        if "object_mask" in self.pub_masks and getattr(arm, "has_object_mask", True) is False:
            self.get_logger().warning(f"task '{arm.task}' names no objects to segment, so nothing is published on "
                                      f"{p.object_mask_topic}; a Flow2Action node subscribed to it holds still: "
                                      "set its object_mask_topic to '' there")
        self.get_logger().info(f"task '{self.task}' ({arm.instruction}), camera {p.camera} {p.width}x{p.height} at {p.rate_hz:g} Hz"
                               f"{', lockstep' if p.lockstep else ''}")

    def _reset(self, seed: int) -> None:
        self.seed = int(seed)
        self.episode += 1
        self._twist, self._twists = np.zeros(3), {}
        self._twist_at = -np.inf
        self._grip = -1.0
        self._answer_grip = None
        self._held_logged = False
        obs = self._sim(self.arm.reset, self.seed)
        self.pub_cam_pose.publish(cv.matrix_to_pose_stamped(obs.cam_pose, self.now_ns(), self.p.robot.base_frame))
        self.get_logger().info(f"episode {self.episode}: task '{self.task}' seed {self.seed}")
        self._publish(obs)

    def _on_reset(self, msg: Int32) -> None:
        self._reset(int(msg.data))

    def _on_task(self, msg: String) -> None:
        task = msg.data.strip()
        try:
            self._load_task(task)
        except SofError as exc:
            self.get_logger().error(f"task switch to '{task}' refused: {exc}")
            return
        self._reset(self.seed)

    # --- commands ---------------------------------------------------------------------------
    def _on_twist(self, msg: TwistStamped) -> None:
        fid = msg.header.frame_id
        if fid and fid != self.p.robot.base_frame:
            self.log_reason("cmd", f"ignoring twist in frame '{fid}'; expected '{self.p.robot.base_frame}'", "warning")
            return
        lin, ang = cv.twist_to_arrays(msg)
        if not (np.all(np.isfinite(lin)) and np.all(np.isfinite(ang))):
            self.log_reason("cmd", "ignoring non-finite twist; holding still", "warning")
            self._twist = np.zeros(3)
            return
        self._twist = lin
        self._twist_at = time.monotonic()
        self._twists[cv.stamp_to_ns(msg.header.stamp)] = lin
        while len(self._twists) > TWISTS_KEPT:
            del self._twists[min(self._twists)]
        self._check_answered()

    def _on_command_info(self, msg: Int64MultiArray) -> None:
        try:
            info = cv.msg_to_command_info(msg)
        except cv.ConversionError as exc:
            self.log_reason("cmd", f"ignoring command info: {exc}", "warning")
            return
        if info.frame_stamp_ns == self._frame_stamp and self._answer_twist is None:
            self._answer_twist = info.command_stamp_ns
            self._answer_grip = None if info.gripper is None or not np.isfinite(info.gripper) else \
                float(np.clip(info.gripper, -1.0, 1.0))
            self._check_answered()

    def _check_answered(self) -> None:
        """The current frame is answered once its command info and the twist it names have both
        arrived (two topics: either may come first)."""
        if self._answer_twist is not None and self._answer_twist in self._twists:
            self._answered, self._answer_linear = True, self._twists[self._answer_twist]

    def _on_gripper(self, msg: Float64) -> None:
        if np.isfinite(msg.data):
            self._grip = float(np.clip(msg.data, -1.0, 1.0))

    def action(self, now: float | None = None) -> np.ndarray:
        """The MetaWorld action the bridge would apply now."""
        p = self.p
        now = time.monotonic() if now is None else now
        a = np.zeros(4)
        if p.lockstep and self._answered:  # simulated time stood still since the answer: its age does not matter
            a[:3] = self._answer_linear / (p.robot.metres_per_action_unit * p.rate_hz)
        elif now - self._twist_at <= p.command_timeout_s:
            a[:3] = self._twist / (p.robot.metres_per_action_unit * p.rate_hz)
        a[3] = self._answer_grip if (p.lockstep and self._answered and self._answer_grip is not None) else self._grip
        return np.clip(a, -1.0, 1.0)

    # --- stepping ---------------------------------------------------------------------------
    def _tick(self) -> None:
        p = self.p
        if p.max_steps and self.arm.steps >= p.max_steps:
            if not self._held_logged:
                self._held_logged = True
                self.get_logger().info(f"episode {self.episode} over after {self.arm.steps} steps "
                                       f"(success={self.arm.success}); publish a seed on {p.reset_topic} to restart")
            return
        now = time.monotonic()
        if p.lockstep and not self._answered and now - self._frame_at < p.lockstep_timeout_s:
            return
        if p.lockstep and not self._answered:
            self.log_reason("lockstep", f"no command for the frame within {p.lockstep_timeout_s:g} s; publishing the "
                            "same frame again (the simulation waits for the graph)", "warning")
            self._publish(self._last_obs, repeat=True)
            return
        obs = self._sim(self.arm.step, self.action(now))
        self._publish(obs)

    def _publish(self, obs, repeat: bool = False) -> None:
        """Every topic of one frame. `repeat`: the current frame again, under its stamp, still waiting for its answer."""
        p = self.p
        cam = p.robot.camera_frame
        h, w = obs.rgb.shape[:2]
        if repeat:
            stamp, self._frame_at = self._frame_stamp, time.monotonic()
        else:
            stamp = self.now_ns()  # capture time of this frame; carried through plan and command headers
            if self._answered and self._answer_grip is not None:
                self._grip = self._answer_grip  # the gripper stays where the last answered command put it
            self._frame_stamp, self._frame_at, self._answered, self._answer_twist = stamp, time.monotonic(), False, None
            self._answer_grip = None
        self._last_obs = obs
        d = self.arm.data
        js = JointState()
        js.header = cv.header(stamp, p.robot.base_frame)
        js.name = list(self._joint_names)
        if hasattr(self.arm, "ros_joint_state"):  # LIBERO: finger joints signed as franka_ros2 reports them
            js.position, js.velocity = self.arm.ros_joint_state(self._joint_names)
        else:
            js.position = [float(d.qpos[i]) for i in self._qpos_idx]
            js.velocity = [float(d.qvel[i]) for i in self._qvel_idx]
        self.pub_joints.publish(js)
        if hasattr(self.arm, "ee_pose"):  # LIBERO: hand pose in the robot base frame
            T = self.arm.ee_pose()
        else:
            T = np.eye(4)
            if self._hand_body is not None:
                T[:3, :3] = d.xmat[self._hand_body].reshape(3, 3)
        T[:3, 3] = obs.ee_pos
        self.pub_ee.publish(cv.matrix_to_pose_stamped(T, stamp, p.robot.base_frame))
        self.pub_grip_state.publish(Float64(data=float(obs.gripper)))
        self.pub_steps.publish(Int32(data=int(self.arm.steps)))  # before success: a monitor stopping at success has both
        self.pub_success.publish(Bool(data=bool(obs.success)))
        self.pub_info.publish(cv.camera_info_msg(obs.intrinsics, w, h, stamp, cam))
        self.pub_depth.publish(cv.image_to_msg(obs.depth, "32FC1", stamp, cam))
        for name, pub in self.pub_masks.items():  # before the frame: a node waiting for them has them first
            mask = getattr(obs, name, None)
            if mask is not None:
                pub.publish(cv.mask_to_msg(mask, stamp, cam))
        self.pub_image.publish(cv.image_to_msg(obs.rgb, "rgb8", stamp, cam))
        self.frames_published += 1

    def _sim(self, fn, *args):
        """Run a simulator call on the simulator thread and return its result (exceptions propagate)."""
        return self._gl.submit(fn, *args).result()

    def close(self) -> None:
        if self.arm is not None:
            self._sim(self.arm.close)
            self.arm = None
        self._gl.shutdown(wait=True)


def main(args: list[str] | None = None) -> int:
    return run_node(SimBridgeNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
