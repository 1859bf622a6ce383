"""The sof_ros nodes as real rclpy nodes talking over DDS (one process, one executor thread),
with the Policy test double from test/ros_test_doubles.py."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from geometry_msgs.msg import PoseStamped, TwistStamped  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, JointState  # noqa: E402
from std_msgs.msg import Bool, Float64, Float64MultiArray, Int32, Int64MultiArray, String  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from sof_ros.ros import conversions as cv  # noqa: E402
from sof_ros.ros.base import command_qos, latched_qos, sensor_qos  # noqa: E402
from sof_ros.ros.params import Topics  # noqa: E402

pytestmark = pytest.mark.timeout(90)

CONFIG = Path(__file__).resolve().parents[1] / "config"


@pytest.fixture(autouse=True)
def _own_ros_home(monkeypatch, tmp_path):
    """Each test its own $ROS_HOME: flow2action keeps its e-stop latch in $ROS_HOME/sof_ros, and one
    test's (or this machine's) latched e-stop must not stop another's arm."""
    monkeypatch.setenv("ROS_HOME", str(tmp_path / "ros_home"))


def ov(**kw) -> list[Parameter]:
    """parameter_overrides from keyword arguments; '__' stands for '.' (robot__name -> robot.name)."""
    return [Parameter(k.replace("__", "."), value=v) for k, v in kw.items()]


def yaml_args(name: str) -> list[str]:
    return ["--ros-args", "--params-file", str(CONFIG / name)]


def test_parameters_declared_with_descriptions_and_read_from_yaml(ros, fake_agent):
    from sof_ros.ros.flow2action_node import Flow2ActionNode
    from sof_ros.ros.policy_node import PolicyNode

    pol = ros.add(PolicyNode(context=ros.ctx, agent=fake_agent, cli_args=yaml_args("sim.yaml")))
    names = pol.list_parameters([], 10).names
    assert "agent.checkpoint" in names and "marker_stride" in names
    for d in pol.describe_parameters([n for n in names if n != "use_sim_time"]):
        assert d.description, f"parameter {d.name} has no description"
        assert d.read_only
    assert pol.get_parameter("ee_pose_topic").value == "/sof/sim/ee_pose"
    assert pol.replan_every == fake_agent.replan_every  # agent.replan_every: 0 in the YAML -> the agent's

    f2a = ros.add(Flow2ActionNode(context=ros.ctx, agent=fake_agent, cli_args=yaml_args("panda.yaml")))
    assert f2a.p.robot.name == "panda" and f2a.p.robot.base_frame == "panda_link0"
    assert f2a.p.twist_topic == "/servo_node/delta_twist_cmds"
    assert f2a.safety.limits.max_linear_speed == pytest.approx(0.15)
    assert f2a.p.robot.joint_names[0] == "panda_joint1"  # from the panda profile, not in the YAML
    assert f2a.get_parameter("robot.workspace_max").value == pytest.approx([0.75, 0.35, 0.6])


def test_sim_bridge_publishes_frames_and_follows_twists(ros):
    from sof_ros.ros.sim_bridge_node import SimBridgeNode

    sq = sensor_qos(10)
    imgs = ros.collect(Image, Topics.SIM_IMAGE, sq)
    depths = ros.collect(Image, Topics.SIM_DEPTH, sq)
    infos = ros.collect(CameraInfo, Topics.SIM_CAMERA_INFO, sq)
    joints = ros.collect(JointState, Topics.SIM_JOINT_STATES, sq)
    ees = ros.collect(PoseStamped, Topics.SIM_EE_POSE, sq)
    success = ros.collect(Bool, Topics.SIM_SUCCESS, latched_qos())
    cam_pose = ros.collect(PoseStamped, Topics.SIM_CAMERA_POSE, latched_qos())
    objects = ros.collect(Image, Topics.SIM_OBJECT_MASK, sq)
    hands = ros.collect(Image, Topics.SIM_ROBOT_MASK, sq)
    steps = ros.collect(Int32, Topics.SIM_STEPS, latched_qos())
    twist_pub = ros.publisher(TwistStamped, Topics.TWIST, command_qos())
    reset_pub = ros.publisher(Int32, Topics.SIM_RESET, command_qos())
    sim = ros.add(SimBridgeNode(context=ros.ctx, parameter_overrides=ov(rate_hz=20.0, lockstep=False)))

    assert ros.wait_for(lambda: len(imgs) >= 3 and len(depths) >= 3 and ees and joints and success and steps, 15)
    # the segmentation of the task's object (the button) and of the hand, with the frame's stamp
    assert ros.wait_for(lambda: {cv.stamp_to_ns(m.header.stamp) for m in objects} & {cv.stamp_to_ns(m.header.stamp) for m in hands}
                        & {cv.stamp_to_ns(m.header.stamp) for m in imgs}, 5)
    both = sorted({cv.stamp_to_ns(m.header.stamp) for m in objects} & {cv.stamp_to_ns(m.header.stamp) for m in hands})[-1]
    obj = cv.msg_to_mask(next(m for m in objects if cv.stamp_to_ns(m.header.stamp) == both))
    hand = cv.msg_to_mask(next(m for m in hands if cv.stamp_to_ns(m.header.stamp) == both))
    assert obj.shape == (128, 128) and 5 < obj.sum() < 0.2 * obj.size and hand.sum() > 5 and not (obj & hand).any()
    assert steps[-1].data >= 1
    img = imgs[-1]
    assert (img.encoding, img.width, img.height) == ("rgb8", 128, 128)
    rgb = cv.msg_to_rgb(img)
    assert rgb.shape == (128, 128, 3) and rgb.std() > 5  # a rendered scene, not a blank image
    stamp = cv.stamp_to_ns(img.header.stamp)
    d = next(m for m in depths if cv.stamp_to_ns(m.header.stamp) == stamp)
    depth = cv.msg_to_depth(d)
    assert d.encoding == "32FC1" and np.nanmin(depth) > 0.1 and np.median(depth) < 5  # background: far plane
    assert any(cv.stamp_to_ns(m.header.stamp) == stamp for m in infos)
    K = cv.camera_info_to_K(infos[-1])
    assert K[0, 2] == pytest.approx(63.5)
    assert joints[-1].name[:7] == [f"right_j{i}" for i in range(7)] and len(joints[-1].position) == 9
    assert cam_pose and cam_pose[-1].header.frame_id == "world"
    assert success[-1].data is False

    x0 = ees[-1].pose.position.x
    end = time.monotonic() + 10.0  # ~1.5 s at 20 Hz; the bridge steps slower when the CPU is oversubscribed
    while time.monotonic() < end and ees[-1].pose.position.x <= x0 + 0.03:
        twist_pub.publish(cv.twist_msg([0.1, 0, 0], [0, 0, 0], sim.now_ns(), "world"))  # 0.5 action units
        time.sleep(0.05)
    assert ees[-1].pose.position.x > x0 + 0.03, (x0, ees[-1].pose.position.x)
    np.testing.assert_allclose(sim.action(time.monotonic() + 10)[:3], 0)  # stale twist -> no motion

    episode, n = sim.episode, len(imgs)
    reset_pub.publish(Int32(data=3))
    assert ros.wait_for(lambda: sim.episode == episode + 1 and sim.seed == 3 and len(imgs) > n + 2, 10)
    assert ros.wait_for(lambda: abs(ees[-1].pose.position.x - x0) < 0.02, 5)  # back at the start pose


class FramePump:
    """Publishes synthetic frames + end-effector poses at a fixed rate from a thread."""

    def __init__(self, ros, rate=20.0):
        self.ros = ros
        self.img = ros.publisher(Image, Topics.IMAGE, sensor_qos())
        self.info = ros.publisher(CameraInfo, Topics.CAMERA_INFO, sensor_qos())
        self.ee = ros.publisher(PoseStamped, Topics.SIM_EE_POSE, sensor_qos())
        self.rate = rate
        self.stamps: list[int] = []
        self.frames = True
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        rng = np.random.default_rng(0)
        self.rgb = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)

    def start(self):
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            now = self.ros.probe.get_clock().now().nanoseconds
            self.ee.publish(cv.matrix_to_pose_stamped(np.eye(4) + np.pad([[0, 0, 0, 0.0]], ((0, 3), (0, 0))) * 0
                                                      + _trans(0.0, 0.7, 0.2), now, "world"))
            if self.frames:
                h, w = self.rgb.shape[:2]
                self.info.publish(cv.camera_info_msg(np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]]), w, h, now, "cam"))
                self.img.publish(cv.image_to_msg(self.rgb, "rgb8", now, "cam"))
                self.stamps.append(now)
            time.sleep(1.0 / self.rate)

    def stop(self):
        self._stop.set()
        self._t.join(2)


def _trans(x, y, z):
    T = np.zeros((4, 4))
    T[:3, 3] = (x, y, z)
    return T


def test_flow2action_twist_watchdog_estop_and_rejections(ros, fake_agent):
    from sof_ros.ros.flow2action_node import Flow2ActionNode

    twists = ros.collect(TwistStamped, Topics.TWIST, command_qos(100))
    grips = ros.collect(Float64, Topics.GRIPPER, command_qos(100))
    status = ros.collect(String, Topics.STATUS, command_qos(100))
    infos = ros.collect(Int64MultiArray, Topics.COMMAND_INFO, command_qos(100))
    tok_pub = ros.publisher(Int64MultiArray, Topics.TOKENS, command_qos())
    flow_pub = ros.publisher(Image, Topics.FLOW_PLAN, command_qos())
    act_pub = ros.publisher(Float64MultiArray, Topics.ACTION_CHUNK, command_qos())
    estop = ros.publisher(Bool, Topics.ESTOP, latched_qos())
    clear = ros.publisher(Bool, Topics.ESTOP_CLEAR, command_qos())
    node = ros.add(Flow2ActionNode(context=ros.ctx, agent=fake_agent, parameter_overrides=ov(
        depth_topic="", frame_timeout_s=0.3, pose_timeout_s=0.3, command_timeout_s=0.3, plan_timeout_s=30.0,
        watchdog_rate_hz=20.0, robot__control_rate_hz=10.0)))
    pump = FramePump(ros).start()
    try:
        assert ros.wait_for(lambda: len(pump.stamps) >= 2 and node.latest is not None, 10)
        # reliable but volatile: a plan published before discovery matched would be lost
        assert ros.wait_for(lambda: all(p.get_subscription_count() for p in (tok_pub, flow_pub, act_pub, clear)), 10)

        def send_plan():  # a long plan (200 steps at 20 Hz): never exhausted in this test
            s = node.latest.stamp_ns
            flow_pub.publish(cv.flow_plan_to_msg(np.zeros((200, 4, 4, 2), np.float32), s, "cam"))
            tok_pub.publish(cv.tokens_to_msg(np.array([5, 6, 7]), s, 200, (64, 48)))
            act_pub.publish(cv.actions_to_msg(None, s))  # a plan is tokens + flow + (possibly empty) chunk
        send_plan()

        def moving():
            return any(np.any(cv.twist_to_arrays(t)[0]) for t in twists[-3:])
        assert ros.wait_for(moving, 5)
        t = next(t for t in reversed(twists) if np.any(cv.twist_to_arrays(t)[0]))
        np.testing.assert_allclose(cv.twist_to_arrays(t)[0], [0.5 * 0.01 * 10, 0, 0])  # action -> m/s
        assert t.header.frame_id == "world"
        # the command info names the twist (by its stamp), the frame it answers and the plan behind it
        ts = cv.stamp_to_ns(t.header.stamp)
        assert ros.wait_for(lambda: any(cv.msg_to_command_info(m).command_stamp_ns == ts for m in infos), 2)
        info = next(cv.msg_to_command_info(m) for m in infos if cv.msg_to_command_info(m).command_stamp_ns == ts)
        assert info.frame_stamp_ns in pump.stamps and info.plan_stamp_ns == node.plan.stamp_ns and not info.is_zero
        assert ts > info.frame_stamp_ns  # stamped when published, not with the (older) capture stamp
        assert ros.wait_for(lambda: grips, 2) and grips[-1].data == -1.0
        assert node.plan.plan.tokens.tolist() == [5, 6, 7] and node.plan.plan.image_size == (64, 48)

        # frames stop -> the watchdog stops the arm (its timing is tested with a fake clock in test_safety.py;
        # here every wait is on a message, never on wall-clock time, so a loaded machine only makes it slower)
        pump.frames = False
        assert ros.wait_for(lambda: status and status[-1].data.startswith("stale frame"), 10)
        assert not np.any(cv.twist_to_arrays(twists[-1])[0])
        pump.frames = True
        assert ros.wait_for(moving, 5)

        # e-stop latches: false does not clear it, fresh frames do not either
        estop.publish(Bool(data=True))
        assert ros.wait_for(lambda: status[-1].data.startswith("e-stop latched"), 3)
        n = len(twists)
        estop.publish(Bool(data=False))
        assert ros.wait_for(lambda: len(twists) > n + 6, 10)  # frames and watchdog ticks after the false
        assert not any(np.any(cv.twist_to_arrays(t)[0]) for t in twists[n:])
        assert node.safety.estopped
        k, m = len(status), len(twists)
        clear.publish(Bool(data=True))
        # after an e-stop only a *new* plan moves the arm: the clear is followed by 'stale plan', never motion.
        # (A fixed sleep here used to race the node: on a loaded machine 0.3 s could pass with no watchdog tick
        # or frame handled after the clear, leaving 'e-stop cleared' as the last status.)
        assert ros.wait_for(lambda: any(s.data.startswith("stale plan") for s in status[k:]), 10), \
            [s.data for s in status[k:]]
        assert any(s.data.startswith("e-stop cleared") for s in status[k:]) and not node.safety.estopped
        assert not any(np.any(cv.twist_to_arrays(t)[0]) for t in twists[m:])
        send_plan()
        assert ros.wait_for(moving, 5)

        # NaN actions and a failing act() are rejected with a reason and a zero twist
        fake_agent.mode = "nan"
        assert ros.wait_for(lambda: status[-1].data.startswith("rejected: action must be 4 finite"), 3)
        assert not np.any(cv.twist_to_arrays(twists[-1])[0])
        fake_agent.mode = "raise"
        assert ros.wait_for(lambda: status[-1].data.startswith("rejected: act() failed"), 3)
        fake_agent.mode = "move"
        assert ros.wait_for(moving, 5)
    finally:
        pump.stop()


def test_camera_policy_flow2action_pipeline_on_the_sim(ros, fake_agent):
    """sim bridge -> camera -> policy -> flow2action -> sim bridge, all from config/sim.yaml."""
    from sof_ros.ros.camera_node import CameraNode
    from sof_ros.ros.flow2action_node import Flow2ActionNode
    from sof_ros.ros.policy_node import PolicyNode
    from sof_ros.ros.sim_bridge_node import SimBridgeNode

    cq = command_qos(100)
    tokens = ros.collect(Int64MultiArray, Topics.TOKENS, cq)
    plans = ros.collect(Image, Topics.FLOW_PLAN, cq)
    vis = ros.collect(Image, Topics.PLAN_IMAGE, cq)
    markers = ros.collect(MarkerArray, Topics.MARKERS, cq)
    flows = ros.collect(Image, Topics.FLOW, sensor_qos(10))
    frames = ros.collect(Image, Topics.IMAGE, sensor_qos(10))
    twists = ros.collect(TwistStamped, Topics.TWIST, cq)
    infos = ros.collect(Int64MultiArray, Topics.COMMAND_INFO, cq)
    ees = ros.collect(PoseStamped, Topics.SIM_EE_POSE, sensor_qos(10))
    instruction = ros.publisher(String, Topics.INSTRUCTION, latched_qos())

    rate = 30.0  # lockstep: only the wall-clock pace changes, not what the policy sees
    ros.add(CameraNode(context=ros.ctx, cli_args=yaml_args("sim.yaml")))
    ros.add(PolicyNode(context=ros.ctx, agent=fake_agent, cli_args=yaml_args("sim.yaml")))
    f2a = ros.add(Flow2ActionNode(context=ros.ctx, agent=fake_agent, cli_args=yaml_args("sim.yaml"),
                                  parameter_overrides=ov(robot__control_rate_hz=rate, robot__max_linear_speed=0.6)))
    sim = ros.add(SimBridgeNode(context=ros.ctx, cli_args=yaml_args("sim.yaml"),
                                parameter_overrides=ov(rate_hz=rate, lockstep_timeout_s=1.0)))
    assert sim.p.lockstep and f2a.p.wait_for_replan  # as configured in sim.yaml
    assert ros.wait_for(lambda: len(frames) >= 2, 10)
    time.sleep(0.5)
    assert not tokens  # nothing is planned before an instruction
    instruction.publish(String(data="press the button from the top"))
    def plans_made():  # a plan Flow2Action missed is published again (plan_request): count plans by their frame
        return len({cv.msg_to_tokens(m)[1] for m in list(tokens)})

    assert ros.wait_for(lambda: plans_made() >= 3 and len(markers) >= 2 and len(vis) >= 2 and len(twists) >= 10, 30)

    toks, stamp, steps, size, per_step = cv.msg_to_tokens(tokens[0])
    assert toks.dtype == np.int64 and len(toks) == 4 and steps == 8 and size == (128, 128) and per_step == 1
    plan = next(p for p in plans if cv.stamp_to_ns(p.header.stamp) == stamp)
    flow = cv.msg_to_flow_plan(plan, steps)
    assert flow.shape == (8, 16, 16, 2) and np.allclose(flow[..., 0], 1.5)
    assert plan.header.frame_id == "corner_camera_optical_frame"
    v = vis[-1]
    assert (v.encoding, v.width, v.height) == ("rgb8", 256, 256)
    arrows = [m for m in markers[-1].markers if m.type == Marker.ARROW and m.action == Marker.ADD]
    assert markers[-1].markers[0].action == Marker.DELETEALL and len(arrows) >= 10
    assert arrows[0].header.frame_id == "world" and len(arrows[0].points) == 2  # base frame via the camera pose
    assert fake_agent.plans[0][1] == "press the button from the top"
    assert fake_agent.plans[0][0].depth is not None and fake_agent.plans[0][0].cam_pose is not None
    f = cv.msg_to_image(flows[-1])
    assert flows[-1].encoding == "32FC2" and f.shape == (128, 128, 2)

    frame_stamps = {cv.stamp_to_ns(m.header.stamp) for m in frames}
    moving = [cv.msg_to_command_info(m) for m in infos if not cv.msg_to_command_info(m).is_zero]
    assert moving and all(c.frame_stamp_ns in frame_stamps and c.plan_stamp_ns in frame_stamps for c in moving[:5])
    # lockstep + wait_for_replan: step_in_plan runs 0..replan_every-1, exactly as the offline loop
    assert fake_agent.acts[:8] == [0, 1, 2, 3, 0, 1, 2, 3]
    x0 = ees[0].pose.position.x
    assert ros.wait_for(lambda: ees[-1].pose.position.x > x0 + 0.03, 15)  # the fake policy moves +x


# --- thin integrations, against stand-ins of the real APIs ----------------------------------------------
class _FakePlanning:
    def __init__(self, log):
        self.log = log

    def set_start_state_to_current_state(self):
        self.log.append(("start",))

    def set_goal_state(self, pose_stamped_msg=None, pose_link=None):
        self.log.append(("goal", pose_stamped_msg, pose_link))

    def plan(self):
        return type("PlanResult", (), {"trajectory": "traj", "__bool__": lambda self: True})()


def _fake_moveit(monkeypatch, log):
    import sys
    import types

    class MoveItPy:  # moveit.planning.MoveItPy(node_name=..., launch_params_filepaths=None, config_dict=None)
        def __init__(self, node_name="moveit_py", launch_params_filepaths=None, config_dict=None):
            log.append(("init", node_name, config_dict))

        def get_planning_component(self, group):
            log.append(("group", group))
            return _FakePlanning(log)

        def execute(self, trajectory, controllers=None):
            log.append(("execute", trajectory))

    moveit, planning = types.ModuleType("moveit"), types.ModuleType("moveit.planning")
    planning.MoveItPy = MoveItPy
    moveit.planning = planning
    monkeypatch.setitem(sys.modules, "moveit", moveit)
    monkeypatch.setitem(sys.modules, "moveit.planning", planning)


def test_pose_targets_clamped_and_executed_through_moveit_py(ros, fake_agent, monkeypatch, tmp_path):
    import yaml

    from sof_ros.errors import SofError
    from sof_ros.ros.flow2action_node import Flow2ActionNode

    log: list = []
    _fake_moveit(monkeypatch, log)
    # MoveItPy cannot read this node's params file: its configuration comes from the moveit_config file
    moveit_cfg = {"robot_description": "<robot name='panda'/>", "robot_description_semantic": "<robot name='panda'/>",
                  "planning_pipelines": {"pipeline_names": ["ompl"]}, "plan_request_params": {"planning_pipeline": "ompl"}}
    with pytest.raises(SofError, match="use_moveit_py needs moveit_config"):
        Flow2ActionNode(context=ros.ctx, agent=fake_agent, cli_args=yaml_args("panda.yaml"),
                        parameter_overrides=ov(output_mode="pose", use_moveit_py=True, estop_state_dir=str(tmp_path)))
    params_file = tmp_path / "moveit_params.yaml"  # the ROS params-file form works too
    params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": moveit_cfg}}))
    (tmp_path / "moveit.yaml").write_text(yaml.safe_dump(moveit_cfg))
    assert __import__("sof_ros.ros.flow2action_node", fromlist=["x"]).load_moveit_config(str(params_file)) == moveit_cfg
    targets = ros.collect(PoseStamped, Topics.POSE_TARGET, command_qos(10))
    node = ros.add(Flow2ActionNode(context=ros.ctx, agent=fake_agent, cli_args=yaml_args("panda.yaml"),
                                   parameter_overrides=ov(output_mode="both", use_moveit_py=True, pose_rate_hz=50.0,
                                                          moveit_config=str(tmp_path / "moveit.yaml"))))
    assert ("init", "sof_flow2action_moveit_py", moveit_cfg) in log and ("group", "panda_arm") in log
    for s in ("frame", "plan", "pose"):
        node.safety.heartbeat(s)
    node.ee_pos = np.array([0.5, 0.0, 0.05])  # near the floor of the panda box (z >= 0.02)
    cmd, reason = node.command_from_action(np.array([0.5, 0.0, -1.0, 1.0]), node.now_ns())
    assert reason.startswith("clamped") and "target" in reason and "workspace box" in reason, reason
    assert ros.wait_for(lambda: targets and any(e[0] == "execute" for e in log), 5), log
    goal = next(e for e in log if e[0] == "goal")
    assert goal[2] == "panda_hand_tcp" and goal[1].header.frame_id == "panda_link0"
    p = targets[-1].pose.position
    assert (p.x, p.y, p.z) == pytest.approx((0.52, 0.0, 0.02))  # 4 steps ahead, z clamped to the box
    q = targets[-1].pose.orientation
    assert (q.x, q.y, q.z, q.w) == pytest.approx((1.0, 0.0, 0.0, 0.0))  # robot.target_orientation
    # e-stopped: no pose target is published, nothing executes
    n_exec, n_targets = sum(e[0] == "execute" for e in log), len(targets)
    node.safety.estop("test")
    cmd, reason = node.command_from_action(np.array([0.5, 0.0, 0.0, 1.0]), node.now_ns())
    assert cmd.is_zero and reason.startswith("e-stop latched")
    time.sleep(0.3)
    assert sum(e[0] == "execute" for e in log) == n_exec and len(targets) == n_targets


def test_moveit_py_missing_is_a_clear_error(ros, fake_agent, monkeypatch):
    import sys

    from sof_ros.errors import SofError
    from sof_ros.ros.flow2action_node import Flow2ActionNode

    monkeypatch.setitem(sys.modules, "moveit", None)
    monkeypatch.setitem(sys.modules, "moveit.planning", None)
    with pytest.raises(SofError, match="moveit_py"):
        Flow2ActionNode(context=ros.ctx, agent=fake_agent, parameter_overrides=ov(output_mode="pose", use_moveit_py=True))


def _fake_realsense(monkeypatch, h=48, w=64):
    """pyrealsense2 stand-in: the calls camera_node makes, frames of a moving texture."""
    import sys
    import types

    rs = types.ModuleType("pyrealsense2")
    rs.stream = types.SimpleNamespace(color="color", depth="depth")
    rs.format = types.SimpleNamespace(rgb8="rgb8", z16="z16")
    calls = {"enabled": [], "stopped": 0}
    # smooth texture moving 1 px per frame: whatever frames the rate throttle keeps under CPU load (every one, or
    # one in four), the motion between published frames stays small enough for DIS to measure reliably
    blocks = np.random.default_rng(0).integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    tex = __import__("cv2").GaussianBlur(blocks, (0, 0), 2.0)

    class Data:
        def __init__(self, arr):
            self.arr = arr

        def get_data(self):
            return self.arr

        def __bool__(self):
            return True

    class Frames:
        def __init__(self, k):
            rgb = np.roll(tex, k, axis=1)  # texture moving 1 px right per frame
            depth = np.full((h, w), 800, np.uint16)
            depth[0, 0] = 0  # invalid pixel
            self.color, self.depth = Data(rgb), Data(depth)

        def get_color_frame(self):
            return self.color

        def get_depth_frame(self):
            return self.depth

    class Pipeline:
        k = 0

        def start(self, cfg):
            intr = types.SimpleNamespace(fx=60.0, fy=61.0, ppx=31.5, ppy=23.5, coeffs=[0.1, 0, 0, 0, 0])
            stream = types.SimpleNamespace(as_video_stream_profile=lambda: types.SimpleNamespace(get_intrinsics=lambda: intr))
            sensor = types.SimpleNamespace(get_depth_scale=lambda: 0.00025)
            device = types.SimpleNamespace(first_depth_sensor=lambda: sensor)
            return types.SimpleNamespace(get_device=lambda: device, get_stream=lambda s: stream)

        def wait_for_frames(self, timeout_ms):
            time.sleep(0.03)
            self.k += 1
            return Frames(self.k)

        def stop(self):
            calls["stopped"] += 1

    class Config:
        def enable_device(self, serial):
            calls["enabled"].append(("device", serial))

        def enable_stream(self, *args):
            calls["enabled"].append(args)

    rs.pipeline, rs.config = Pipeline, Config
    rs.align = lambda stream: types.SimpleNamespace(process=lambda frames: frames)
    monkeypatch.setitem(sys.modules, "pyrealsense2", rs)
    return calls


def test_camera_node_realsense_source(ros, monkeypatch):
    from sof_ros.ros.camera_node import CameraNode

    calls = _fake_realsense(monkeypatch)
    sq = sensor_qos(10)
    imgs = ros.collect(Image, Topics.IMAGE, sq)
    depths = ros.collect(Image, Topics.DEPTH, sq)
    infos = ros.collect(CameraInfo, Topics.CAMERA_INFO, sq)
    flows = ros.collect(Image, Topics.FLOW, sq)
    poses = ros.collect(PoseStamped, Topics.CAMERA_POSE, latched_qos())
    cam = ros.add(CameraNode(context=ros.ctx, cli_args=yaml_args("panda.yaml"), parameter_overrides=ov(
        realsense_width=64, realsense_height=48, realsense_serial="123", working_width=0, working_height=0, rate_hz=10.0, camera_pose_source="param",
        camera_pose=[0.1, 0.2, 0.3, 0.0, 0.0, 0.0, 1.0])))
    assert ("device", "123") in calls["enabled"] and ("color", 64, 48, "rgb8", 30) in calls["enabled"]
    assert ros.wait_for(lambda: len(imgs) >= 3 and len(flows) >= 2 and depths and infos and poses, 10)
    gaps = np.diff([cv.stamp_to_ns(m.header.stamp) for m in imgs]) / 1e9
    assert gaps.min() > 0.09, gaps  # rate_hz 10 throttles the ~30 fps stream
    stamp = cv.stamp_to_ns(imgs[-1].header.stamp)
    assert imgs[-1].header.frame_id == "camera_color_optical_frame"
    d = cv.msg_to_depth(next(m for m in depths if cv.stamp_to_ns(m.header.stamp) <= stamp))
    assert np.isnan(d[0, 0]) and d[1, 1] == pytest.approx(0.2)  # 800 * 0.00025 m; 0 -> invalid
    K = cv.camera_info_to_K(infos[-1])
    assert K[0, 0] == 60.0 and K[1, 1] == 61.0 and infos[-1].d[0] == pytest.approx(0.1)
    f = cv.msg_to_image(flows[-1])
    assert flows[-1].encoding == "32FC2" and f.shape == (48, 64, 2) and np.isfinite(f).all() and f[..., 0].mean() > 0.5  # texture moves right
    assert poses[-1].header.frame_id == "panda_link0" and poses[-1].pose.position.z == pytest.approx(0.3)
    cam.close()
    assert calls["stopped"] == 1


def test_lockstep_applies_the_gripper_the_command_info_carries(ros):
    """The gripper topic is an unstamped Float64: in lockstep the bridge steps with the gripper named in
    the command info answering the frame, not whatever gripper message it happened to take last (a
    late one from the previous command made the simulated trajectory depend on callback order)."""
    from sof_ros.ros.sim_bridge_node import SimBridgeNode

    sim = SimBridgeNode(context=ros.ctx, parameter_overrides=ov(rate_hz=20.0, lockstep=True))  # not spun: the
    try:  # test plays the executor, so the order of the three callbacks is the one written here
        base = sim.p.robot.base_frame

        def answer(stamp, gripper, late_topic_value):
            sim._on_gripper(Float64(data=float(gripper)))
            sim._on_twist(cv.twist_msg([0.0, 0.0, 0.0], [0.0, 0.0, 0.0], stamp, base))
            sim._on_command_info(cv.command_info_msg(cv.CommandInfo(stamp, sim._frame_stamp, 0, 0, True, gripper)))
            sim._on_gripper(Float64(data=float(late_topic_value)))  # an older gripper message taken late

        assert sim.action()[3] == -1.0
        answer(sim.now_ns(), 1.0, -1.0)
        assert sim._answered and sim.action()[3] == 1.0
        frames = sim.frames_published
        sim._tick()
        assert sim.frames_published == frames + 1 and not sim._answered
        assert sim.action()[3] == 1.0  # held closed until a command says otherwise
        answer(sim.now_ns(), -1.0, 1.0)
        assert sim.action()[3] == -1.0
        # a five-value command info (recorded before the gripper was added) leaves the gripper topic in charge
        sim._tick()
        old = cv.command_info_msg(cv.CommandInfo(sim.now_ns(), sim._frame_stamp, 0, 0, True))
        old.data = list(old.data)[:5]
        assert cv.msg_to_command_info(old).gripper is None
        sim._on_twist(cv.twist_msg([0.0, 0.0, 0.0], [0.0, 0.0, 0.0], cv.msg_to_command_info(old).command_stamp_ns, base))
        sim._on_command_info(old)
        sim._on_gripper(Float64(data=0.5))
        assert sim._answered and sim.action()[3] == 0.5
    finally:
        sim._sim(sim.arm.close)
        sim.destroy_node()


def test_lockstep_publishes_an_unanswered_frame_again_under_its_stamp_and_steps_with_the_named_twist(ros):
    """Lockstep: a frame unanswered for lockstep_timeout_s comes again with the same stamp, so the graph
    knows it for the same frame and its late answer still counts; the simulator then steps with exactly
    the twist that answer names, not a newer one (a watchdog's zero twist taken in between), and not
    zero because the twist waited longer than command_timeout_s while the simulation stood still."""
    from sof_ros.ros.sim_bridge_node import SimBridgeNode

    sim = SimBridgeNode(context=ros.ctx, parameter_overrides=ov(rate_hz=20.0, lockstep=True, lockstep_timeout_s=0.05,
                                                                command_timeout_s=0.05))
    try:
        base, sent = sim.p.robot.base_frame, []
        sim.pub_image.publish = lambda m: sent.append(cv.stamp_to_ns(m.header.stamp))
        frame, steps = sim._frame_stamp, sim.arm.steps
        time.sleep(0.06)
        sim._tick()
        assert sent == [frame] and sim._frame_stamp == frame and sim.arm.steps == steps  # again, same stamp
        answer = sim.now_ns()
        sim._on_twist(cv.twist_msg([0.1, 0.0, 0.0], [0.0, 0.0, 0.0], answer, base))
        sim._on_command_info(cv.command_info_msg(cv.CommandInfo(answer, frame, 0, 0, False, -1.0)))
        for _ in range(20):  # watchdog stops after it, more than the bridge keeps twists of
            sim._on_twist(cv.twist_msg([0.0, 0.0, 0.0], [0.0, 0.0, 0.0], sim.now_ns(), base))
        time.sleep(0.06)  # older than command_timeout_s by now: simulated time stood still meanwhile
        assert sim._answered and sim.action()[0] == pytest.approx(0.1 / (0.01 * 20.0))
        sim._tick()
        assert sim.arm.steps == steps + 1 and sent[-1] != frame and not sim._answered
    finally:
        sim._sim(sim.arm.close)
        sim.destroy_node()


def test_bringup_summary_counts_a_frame_sent_again_and_a_plan_resent_once(ros):
    """sof-bringup's counts: in lockstep a frame comes again under its stamp and a plan may be sent
    again (plan_request); counted as messages, a test bound like `flow_plans > 2` passed on one plan."""
    from sof_ros.ros import graph
    from sof_ros.ros.bringup import make_monitor

    mon = make_monitor(graph.plan("sim", task="button-press"), "", context=ros.ctx)
    try:
        for stamp in (1, 1, 2, 1_000_000_001, 2):
            mon._on_frame(cv.image_to_msg(np.zeros((4, 4, 3), np.uint8), "rgb8", stamp, "camera"))
        for stamp in (5, 5, 5, 7):
            mon._on_flow_plan(cv.image_to_msg(np.zeros((4, 4, 3), np.uint8), "rgb8", stamp, "camera"))
        for stamp in (5, 5, 7, 7, 7):
            mon._on_tokens(cv.tokens_to_msg(np.array([1, 2, 3, 4]), stamp, 16, (128, 128)))
        c = mon.summary()["counts"]
        assert (c["frames"], c["frames_repeated"], c["flow_plans"], c["flow_plans_resent"]) == (3, 2, 2, 2)
        assert (c["tokens"], c["tokens_resent"]) == (2, 3)
    finally:
        mon.destroy_node()


def test_sim_bridge_task_switch_and_bad_task(ros):
    from sof_ros.ros.sim_bridge_node import SimBridgeNode

    task_pub = ros.publisher(String, Topics.SIM_TASK, command_qos())
    success = ros.collect(Bool, Topics.SIM_SUCCESS, latched_qos())
    sim = ros.add(SimBridgeNode(context=ros.ctx, parameter_overrides=ov(rate_hz=20.0, lockstep=False)))
    assert ros.wait_for(lambda: success and task_pub.get_subscription_count() >= 1, 10)
    episode = sim.episode
    task_pub.publish(String(data="no-such-task"))
    time.sleep(0.5)
    assert sim.task == "button-press-topdown" and sim.episode == episode  # refused, logged, still running
    task_pub.publish(String(data="door-open"))
    assert ros.wait_for(lambda: sim.task == "door-open" and sim.episode == episode + 1, 15)


def test_flow2action_rejects_non_finite_plans_and_poses(ros, fake_agent):
    from sof_ros.ros.flow2action_node import Flow2ActionNode

    node = ros.add(Flow2ActionNode(context=ros.ctx, agent=fake_agent, parameter_overrides=ov(depth_topic="")))
    stamp = node.now_ns()
    flow = np.zeros((4, 2, 2, 2), np.float32)
    flow[1, 0, 0, 0] = np.nan
    node._on_flow_plan(cv.flow_plan_to_msg(flow, stamp, "cam"))
    node._on_actions(cv.actions_to_msg(None, stamp))
    node._on_tokens(cv.tokens_to_msg(np.array([1, 2]), stamp, 4, (64, 48)))
    assert node.plan is None and node.safety.age("plan") == float("inf")  # refused: no heartbeat
    node._on_flow_plan(cv.flow_plan_to_msg(np.zeros((4, 2, 2, 2), np.float32), stamp + 1, "cam"))
    node._on_actions(cv.actions_to_msg(np.full((4, 4), np.inf), stamp + 1))
    node._on_tokens(cv.tokens_to_msg(np.array([1, 2]), stamp + 1, 4, (64, 48)))
    assert node.plan is None
    node._on_flow_plan(cv.flow_plan_to_msg(np.zeros((4, 2, 2, 2), np.float32), stamp + 2, "cam"))
    node._on_actions(cv.actions_to_msg(None, stamp + 2))
    node._on_tokens(cv.tokens_to_msg(np.array([1, 2]), stamp + 2, 4, (64, 48)))
    assert node.plan is not None and node.plan.plan.tokens.tolist() == [1, 2]  # a finite plan is taken

    # a row without flow (bc, pixel_skills): an action chunk and a 0-step flow plan is a plan of 3 steps
    chunk = np.tile([[0.5, 0.0, 0.0, 1.0]], (3, 1))
    node._on_flow_plan(cv.flow_plan_to_msg(np.zeros((0, 2, 2, 2), np.float32), stamp + 3, "cam"))
    node._on_actions(cv.actions_to_msg(chunk, stamp + 3))
    node._on_tokens(cv.tokens_to_msg(np.zeros(0, np.int64), stamp + 3, 0, (64, 48)))
    assert node.plan.stamp_ns == stamp + 3 and node.plan.plan.steps == 3
    node._on_flow_plan(cv.flow_plan_to_msg(np.zeros((0, 2, 2, 2), np.float32), stamp + 4, "cam"))
    node._on_actions(cv.actions_to_msg(None, stamp + 4))
    node._on_tokens(cv.tokens_to_msg(np.zeros(0, np.int64), stamp + 4, 0, (64, 48)))
    assert node.plan.stamp_ns == stamp + 3  # neither flow nor actions: refused

    # k-gap plans: 4 flow fields 3 control steps apart cover 12 control steps
    node._on_flow_plan(cv.flow_plan_to_msg(np.zeros((4, 2, 2, 2), np.float32), stamp + 5, "cam"))
    node._on_actions(cv.actions_to_msg(None, stamp + 5))
    node._on_tokens(cv.tokens_to_msg(np.array([1, 2]), stamp + 5, 4, (64, 48), frames_per_step=3))
    assert node.plan.stamp_ns == stamp + 5 and node.plan.plan.frames_per_step == 3 and node.plan.plan.steps == 12

    bad = cv.matrix_to_pose_stamped(np.eye(4), stamp, "world")
    bad.pose.position.x = float("nan")
    node._on_ee(bad)
    assert node.ee_pos is None and node.safety.age("pose") == float("inf")
    other = cv.matrix_to_pose_stamped(np.eye(4), stamp, "panda_link0")
    node._on_ee(other)  # wrong frame: the box cannot be enforced on it
    assert node.ee_pos is None
    node._on_ee(cv.matrix_to_pose_stamped(np.eye(4), stamp, "world"))
    assert node.ee_pos is not None and node.safety.age("pose") < 1.0


def test_plan_tracks_are_in_frame_pixels_and_the_overlay_shows_them():
    """FlowPlan flow is in working-grid pixels: 1 px on a 32-wide grid is 4 px of a 128-wide frame."""
    from sof_ros.ros import plan_vis

    flow = np.zeros((3, 32, 32, 2), np.float32)
    flow[..., 0] = 1.0
    trk = plan_vis.tracks(flow, (128, 128), stride=32)
    np.testing.assert_allclose(trk[:, -1, 0] - trk[:, 0, 0], 12.0)  # 3 steps x 4 px
    rgb = np.zeros((128, 128, 3), np.uint8)
    small = flow * 0.05  # 0.6 px over the plan: drawn magnified, and says so
    img = plan_vis.overlay(rgb, small, (128, 128), stride=16, scale=2, min_px=0.1)
    assert img.shape == (256, 256, 3)
    drawn = (img[20:] != 0).any(axis=2).sum()  # below the gain label
    assert drawn > 200, drawn
    K = np.array([[100.0, 0, 63.5], [0, 100.0, 63.5], [0, 0, 1]])
    arrows = plan_vis.arrows_3d(flow, (128, 128), K, None, None, stride=32, default_depth=1.0)
    np.testing.assert_allclose(arrows[:, 1, 0] - arrows[:, 0, 0], 12.0 / 100.0)  # 12 px at 1 m, f = 100 px


def test_twists_are_stamped_when_published_and_the_command_info_names_frame_and_plan(ros, fake_agent, monkeypatch):
    """MoveIt Servo drops a twist whose stamp is older than incoming_command_timeout (0.1 s): a command
    answering a frame captured 0.3 s ago must still carry the time it was sent. The frame and plan it
    answers travel in the command info instead."""
    from sof_ros.ros.flow2action_node import Flow2ActionNode

    node = ros.add(Flow2ActionNode(context=ros.ctx, agent=fake_agent, parameter_overrides=ov(depth_topic="")))
    sent = []
    for pub in (node.pub_twist, node.pub_info):
        monkeypatch.setattr(pub, "publish", sent.append)
    for s in ("frame", "plan", "pose"):
        node.safety.heartbeat(s)
    node.ee_pos = np.array([0.0, 0.7, 0.2])
    frame = node.now_ns() - 300_000_000  # captured 0.3 s ago
    t0 = node.now_ns()
    node.command_from_action(np.array([0.5, 0.0, 0.0, 1.0]), frame, frame - 100_000_000, 3)
    t1 = node.now_ns()
    twist, info = sent[0], cv.msg_to_command_info(sent[1])
    stamp = cv.stamp_to_ns(twist.header.stamp)
    assert t0 <= stamp <= t1, (t0 - frame, stamp - t0, t1 - stamp)
    assert np.any(cv.twist_to_arrays(twist)[0])
    assert info == cv.CommandInfo(stamp, frame, frame - 100_000_000, 3, False, 1.0)
    sent.clear()
    node.safety.estop("test")
    node._watchdog()  # a stop that answers no frame
    info = cv.msg_to_command_info(sent[1])
    assert info.command_stamp_ns == cv.stamp_to_ns(sent[0].header.stamp) and info.frame_stamp_ns == 0 and info.is_zero


def test_camera_node_publishes_at_the_working_resolution(ros):
    """A 320x240 camera: frames, depth, camera_info and flow leave the camera node at the working size
    (here 64x48), K scaled with them; depth resampled without mixing values."""
    from sof_ros.ros.camera_node import CameraNode

    sq = sensor_qos(10)
    imgs, depths = ros.collect(Image, Topics.IMAGE, sq), ros.collect(Image, Topics.DEPTH, sq)
    infos, flows = ros.collect(CameraInfo, Topics.CAMERA_INFO, sq), ros.collect(Image, Topics.FLOW, sq)
    pub_img, pub_depth = ros.publisher(Image, Topics.SIM_IMAGE, sq), ros.publisher(Image, Topics.SIM_DEPTH, sq)
    pub_info = ros.publisher(CameraInfo, Topics.SIM_CAMERA_INFO, sq)
    cam = ros.add(CameraNode(context=ros.ctx, parameter_overrides=ov(working_width=64, working_height=48,
                                                                    camera_pose_source="none")))
    assert ros.wait_for(lambda: pub_img.get_subscription_count() and pub_depth.get_subscription_count(), 10)
    K = np.array([[300.0, 0, 159.5], [0, 300.0, 119.5], [0, 0, 1]])
    tex = __import__("cv2").GaussianBlur(np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8), (0, 0), 3)
    depth = np.full((240, 320), 0.8, np.float32)
    depth[:, 160:] = 1.6
    k = 0
    while len(imgs) < 3 or not flows:
        assert k < 200, (len(imgs), len(flows))
        stamp = ros.probe.get_clock().now().nanoseconds
        pub_info.publish(cv.camera_info_msg(K, 320, 240, stamp, "cam"))
        pub_depth.publish(cv.image_to_msg(depth, "32FC1", stamp, "cam"))
        pub_img.publish(cv.image_to_msg(np.roll(tex, 5 * k, axis=1), "rgb8", stamp, "cam"))
        k += 1
        ros.wait_for(lambda: len(imgs) >= k, 0.5)
    assert (imgs[-1].width, imgs[-1].height) == (64, 48) and cam.frames_published >= 3
    d = cv.msg_to_depth(depths[-1])
    assert d.shape == (48, 64) and set(np.unique(d).tolist()) == {np.float32(0.8), np.float32(1.6)}
    info = next(i for i in infos if i.header.stamp == imgs[-1].header.stamp)
    assert (info.width, info.height) == (64, 48)
    np.testing.assert_allclose(cv.camera_info_to_K(info), [[60.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]])
    assert cv.msg_to_image(flows[-1]).shape == (48, 64, 2)


# --- safety and bad input (issue 10) -----------------------------------------------------------------
def _restart(ros, node, make):
    """Flow2Action 'crashes' (gone from the graph, its memory with it) and a new one starts."""
    ros.remove(node)
    return ros.add(make())


def _moving(twists, since=0):
    return any(np.any(cv.twist_to_arrays(t)[0]) for t in twists[since:])


def test_estop_holds_across_flow2action_restarts(ros, fake_agent, tmp_path):
    """(a) an e-stop sent once by a publisher that is gone by the restart (`ros2 topic pub --once`);
    (b) true then false on the latched e-stop topic, so late joiners see false. Either way the
    restarted node is e-stopped until an explicit clear; a restart without an e-stop starts stopped
    until fresh inputs (frame, pose, a new plan) arrive."""
    import json

    from rclpy.node import Node

    from sof_ros.ros.flow2action_node import Flow2ActionNode

    state = tmp_path / "estop_state"
    twists = ros.collect(TwistStamped, Topics.TWIST, command_qos(100))
    status = ros.collect(String, Topics.STATUS, command_qos(100))
    clear = ros.publisher(Bool, Topics.ESTOP_CLEAR, command_qos())
    plan_pubs = (ros.publisher(Image, Topics.FLOW_PLAN, command_qos()), ros.publisher(Int64MultiArray, Topics.TOKENS, command_qos()),
                 ros.publisher(Float64MultiArray, Topics.ACTION_CHUNK, command_qos()))

    def make():
        return Flow2ActionNode(context=ros.ctx, agent=fake_agent, parameter_overrides=ov(
            depth_topic="", estop_state_dir=str(state), plan_timeout_s=30.0))

    def latched_on_disk():
        return json.loads((state / "sof_flow2action.estop.json").read_text())["latched"]

    def send_plan(node):
        s = node.latest.stamp_ns
        plan_pubs[0].publish(cv.flow_plan_to_msg(np.zeros((200, 4, 4, 2), np.float32), s, "cam"))
        plan_pubs[1].publish(cv.tokens_to_msg(np.array([5, 6, 7]), s, 200, (64, 48)))
        plan_pubs[2].publish(cv.actions_to_msg(None, s))

    def cleared(node):
        assert ros.wait_for(lambda: clear.get_subscription_count() >= 1, 10)
        clear.publish(Bool(data=True))
        assert ros.wait_for(lambda: not node.safety.estopped, 5)
        assert latched_on_disk() is False

    node = ros.add(make())
    assert not node.safety.estopped and latched_on_disk() is False  # the state file exists from the start
    pump = FramePump(ros).start()
    try:
        # (a) sent once, and the sender is gone before the restart
        once = Node("estop_once", context=ros.ctx)
        pub = once.create_publisher(Bool, Topics.ESTOP, latched_qos())
        assert ros.wait_for(lambda: pub.get_subscription_count() >= 1, 10)
        pub.publish(Bool(data=True))
        assert ros.wait_for(lambda: any(s.data.startswith("e-stop latched: /sof/estop = true") for s in status), 5)
        assert latched_on_disk() is True  # on disk by the time the stop is acknowledged
        once.destroy_node()
        node = _restart(ros, node, make)
        assert node.safety.estopped and "held from before this node started" in node.safety.estop_reason
        n = len(twists)
        assert ros.wait_for(lambda: node.latest is not None and all(p.get_subscription_count() for p in plan_pubs), 10)
        send_plan(node)  # fresh frames, pose and plan: still stopped
        assert ros.wait_for(lambda: len(twists) > n + 10, 10) and not _moving(twists, n)
        assert status[-1].data.startswith("e-stop latched: held from before this node started")
        cleared(node)
        send_plan(node)
        assert ros.wait_for(lambda: _moving(twists, n), 10)  # the clear, and only the clear, released it

        # (b) true then false on the latched topic: late joiners are told false
        estop = ros.publisher(Bool, Topics.ESTOP, latched_qos())
        assert ros.wait_for(lambda: estop.get_subscription_count() >= 1, 10)
        estop.publish(Bool(data=True))
        assert ros.wait_for(lambda: node.safety.estopped and latched_on_disk(), 5)
        estop.publish(Bool(data=False))
        assert ros.wait_for(lambda: node.estop_topic_last is False, 5)
        node = _restart(ros, node, make)
        assert ros.wait_for(lambda: node.estop_topic_last is False, 10)  # the topic's latched false reached it...
        assert node.safety.estopped  # ...and did not release the stop
        n = len(twists)
        assert ros.wait_for(lambda: node.latest is not None, 10)
        send_plan(node)
        assert ros.wait_for(lambda: len(twists) > n + 10, 10) and not _moving(twists, n)
        cleared(node)

        # a restart without an e-stop starts stopped: nothing moves before a new plan arrives
        node = _restart(ros, node, make)
        assert not node.safety.estopped
        n, k = len(twists), len(status)
        assert ros.wait_for(lambda: node.latest is not None and len(twists) > n + 10, 10)
        assert not _moving(twists, n) and any(s.data.startswith("stale plan") for s in status[k:])
        send_plan(node)
        assert ros.wait_for(lambda: _moving(twists, n), 10)
    finally:
        pump.stop()


def test_flow2action_refuses_to_start_without_a_writable_estop_state(ros, fake_agent, tmp_path):
    from sof_ros.errors import SofError
    from sof_ros.ros.flow2action_node import Flow2ActionNode

    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the state directory should be")
    with pytest.raises(SofError, match="e-stop state file .* estop_state_dir"):
        Flow2ActionNode(context=ros.ctx, agent=fake_agent, parameter_overrides=ov(estop_state_dir=str(blocker)))
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "sof_flow2action.estop.json").write_text("{not json")
    node = ros.add(Flow2ActionNode(context=ros.ctx, agent=fake_agent, parameter_overrides=ov(estop_state_dir=str(tmp_path / "state"))))
    assert node.safety.estopped and "unreadable" in node.safety.estop_reason  # a damaged latch is a latch


def test_bad_frames_never_drive_the_arm(ros, fake_agent, monkeypatch):
    """A 1x1 frame, depth of another size, a frame unlike its camera_info or unlike the frames the
    checkpoint was trained on: a zero twist and a reason -- where a good frame moves the arm."""
    from sof_ros.ros.base import Frame
    from sof_ros.ros.flow2action_node import Flow2ActionNode
    from sof_ros.ros.policy_node import PolicyNode

    fake_agent.frame_size = (64, 48)  # what a checkpoint says it was trained on (SofPolicy.frame_size)
    node = ros.add(Flow2ActionNode(context=ros.ctx, agent=fake_agent, parameter_overrides=ov(plan_timeout_s=30.0)))
    sent = []
    monkeypatch.setattr(node.pub_twist, "publish", sent.append)
    monkeypatch.setattr(node.pub_status, "publish", sent.append)
    node.safety.heartbeat("pose")
    node.ee_pos = node.ee.latest = np.array([0.0, 0.7, 0.2])
    rgb, depth = np.zeros((48, 64, 3), np.uint8), np.ones((48, 64), np.float32)
    K = np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]])
    t = node.now_ns()
    node.on_frame(Frame(t, rgb, depth))
    assert sent[-1].data.startswith("rejected frame: no camera_info yet")
    node._on_info(cv.camera_info_msg(K, 64, 48, t, "cam"))
    node.on_frame(Frame(t + 1, rgb, depth))
    node._add_part(t + 1, tokens=np.array([1]), steps=200, size=(64, 48), actions=None,
                   flow_msg=cv.flow_plan_to_msg(np.zeros((200, 2, 2, 2), np.float32), t + 1, "cam"))
    assert sent[-1].data == "ok" and np.any(cv.twist_to_arrays(sent[-2])[0])  # a good frame moves the arm

    def rejected(frame, why):
        sent.clear()
        node.on_frame(frame)
        assert sent[-1].data.startswith("rejected frame: " + why), sent[-1].data
        assert not np.any(cv.twist_to_arrays(sent[-2])[0])

    rejected(Frame(t + 2, np.zeros((1, 1, 3), np.uint8), np.ones((1, 1), np.float32)), "image 1x1 but camera_info says 64x48")
    rejected(Frame(t + 3, rgb, np.ones((24, 32), np.float32)), "depth 32x24 does not match the image 64x48")
    node._on_info(cv.camera_info_msg(K, 1, 1, t, "cam"))
    rejected(Frame(t + 4, np.zeros((1, 1, 3), np.uint8)), "image 1x1 but the checkpoint was trained on 64x48")
    node._on_info(cv.camera_info_msg(K, 64, 48, t, "cam"))
    sent.clear()
    node.on_frame(Frame(t + 5, rgb, depth))
    assert sent[-1].data == "ok"

    # the policy node does not plan on such a frame either
    pol = ros.add(PolicyNode(context=ros.ctx, agent=fake_agent))
    pol.instruction, pol._new_instruction = "push the button", True
    pol._on_info(cv.camera_info_msg(K, 64, 48, t, "cam"))
    pol.on_frame(Frame(t, rgb, np.ones((24, 32), np.float32)))
    pol.on_frame(Frame(t + 1, np.zeros((1, 1, 3), np.uint8), np.ones((1, 1), np.float32)))
    assert not fake_agent.plans
    pol.on_frame(Frame(t + 2, rgb, depth))
    assert len(fake_agent.plans) == 1


SHIPPED = Path(__file__).resolve().parents[1] / "models" / "sof_metaworld"


@pytest.mark.skipif(not (SHIPPED / "f2a.pt").is_file(), reason=f"shipped checkpoint {SHIPPED} is missing")
def test_unknown_instructions_refused_or_embedded_with_an_encoder_loaded_at_start_up(ros, monkeypatch):
    """The language model is loaded while the node starts (unknown_instruction=warn), never inside
    the instruction callback; with refuse (the default) an instruction the checkpoint was not
    trained on stops planning, and says so."""
    import sys
    import types

    from sof_ros import text
    from sof_ros.policies import load_policy
    from sof_ros.ros.base import Frame
    from sof_ros.ros.policy_node import PolicyNode

    loads = []

    class Encoder:  # stands in for sentence_transformers.SentenceTransformer: records where it is loaded
        def __init__(self, path, device=None):
            loads.append(threading.current_thread())

        def encode(self, texts, normalize_embeddings=True):
            return np.full((len(texts), 384), 384 ** -0.5, np.float32)

    monkeypatch.setitem(sys.modules, "sentence_transformers", types.SimpleNamespace(SentenceTransformer=Encoder))
    monkeypatch.setattr(text, "_MODEL", None)
    policy = load_policy("sof", str(SHIPPED))
    known, unknown = policy.instructions[0], "juggle three oranges"
    assert not policy.knows_instruction(unknown)
    status = ros.collect(String, Topics.POLICY_STATUS, latched_qos())
    instruction = ros.publisher(String, Topics.INSTRUCTION, latched_qos())

    refuse = ros.add(PolicyNode(context=ros.ctx, agent=policy))
    assert policy.runtime == "onnxruntime", policy.runtime_note  # agent.runtime's default, checked against eager
    assert not loads  # refuse never needs the language model
    instruction.publish(String(data=unknown))
    assert ros.wait_for(lambda: status and status[-1].data.startswith("instruction refused"), 10)
    assert "not trained on it" in status[-1].data and "unknown_instruction:=warn" in status[-1].data
    assert refuse.instruction == "" and not loads
    instruction.publish(String(data=known))
    assert ros.wait_for(lambda: refuse.instruction == known, 10)
    ros.remove(refuse)

    warn = PolicyNode(context=ros.ctx, agent=policy, parameter_overrides=ov(unknown_instruction="warn"))
    assert loads == [threading.current_thread()]  # at start-up, in the thread constructing the node
    ros.add(warn)
    k = len(status)
    instruction.publish(String(data=unknown))
    assert ros.wait_for(lambda: warn.instruction == unknown, 10)
    assert ros.wait_for(lambda: any("not one the checkpoint was trained on" in s.data for s in status[k:]), 10)
    assert "planning anyway (unknown_instruction=warn)" in status[-1].data
    assert loads == [threading.current_thread()] and policy.knows_instruction(unknown)  # embedded, not reloaded
    K = np.array([[100.0, 0, 63.5], [0, 100.0, 63.5], [0, 0, 1]])
    warn._on_info(cv.camera_info_msg(K, 128, 128, 1, "cam"))
    warn.ee.add(1, np.array([0.0, 0.6, 0.2]))
    warn.on_frame(Frame(1, np.zeros((128, 128, 3), np.uint8), np.ones((128, 128), np.float32)))
    assert warn.plans_published == 1


def test_instruction_logging_is_truncated_and_throttled(ros, fake_agent, monkeypatch):
    """~600 different megabyte-long instructions a second used to be ~600 full-length INFO lines a second."""
    from sof_ros.ros.policy_node import PolicyNode

    node = ros.add(PolicyNode(context=ros.ctx, agent=fake_agent, parameter_overrides=ov(max_instruction_chars=10**7)))
    lines = []
    log = types_logger(lines)
    monkeypatch.setattr(node, "get_logger", lambda: log)
    statuses = []
    monkeypatch.setattr(node.pub_status, "publish", statuses.append)
    big = "x" * 1_000_000
    t0 = time.monotonic()
    for i in range(300):
        node._on_instruction(String(data=f"{i} {big}"))
    elapsed = time.monotonic() - t0
    assert node.instruction.startswith("299 ")  # the newest instruction is the one in force
    assert 1 <= len(lines) <= 2 + elapsed, (len(lines), elapsed)
    assert max(len(line) for line in lines) < 400 and "(1000002 characters)" in lines[0]
    assert len(statuses) == 300 and max(len(s.data) for s in statuses) < 400
    node.p.max_instruction_chars = 1000  # the default
    node._on_instruction(String(data="y" * 2000))  # over max_instruction_chars: refused, not planned on
    assert node.instruction == "" and statuses[-1].data.startswith("instruction refused")


def types_logger(lines):
    import types

    def record(msg, *a, **k):
        lines.append(msg)

    return types.SimpleNamespace(debug=record, info=record, warning=record, error=record)


# --- real-robot readiness (issue 11) --------------------------------------------------------------------
def _servo_command_type_stand_in(monkeypatch):
    """moveit_msgs/srv/ServoCommandType (int8 command_type -> bool success) is not installable here: a
    stand-in with the same Python surface (Request.TWIST, request.command_type, response.success) on
    a real ROS service type, so the call really crosses DDS. lifecycle_msgs/ChangeState carries the
    command type in transition.id and answers `success`."""
    import sys
    import types

    ChangeState = pytest.importorskip("lifecycle_msgs.srv", reason="no stand-in service type available").ChangeState

    class Request(ChangeState.Request):
        JOINT_JOG, TWIST, POSE = 0, 1, 2

        @property
        def command_type(self):
            return self.transition.id

        @command_type.setter
        def command_type(self, value):
            self.transition.id = value

    class ServoCommandType(ChangeState):
        pass

    ServoCommandType.Request = Request
    msgs, srv = types.ModuleType("moveit_msgs"), types.ModuleType("moveit_msgs.srv")
    srv.ServoCommandType, msgs.srv = ServoCommandType, srv
    monkeypatch.setitem(sys.modules, "moveit_msgs", msgs)
    monkeypatch.setitem(sys.modules, "moveit_msgs.srv", srv)
    return ServoCommandType


def test_flow2action_switches_servo_to_twist_commands_once_servo_is_up(ros, fake_agent, monkeypatch):
    """Jazzy's MoveIt Servo drops twists until ~/switch_command_type sets TWIST (1): flow2action calls
    it at start-up and keeps trying until Servo (which may start later) answers success."""
    from sof_ros.ros.flow2action_node import Flow2ActionNode

    srv_type = _servo_command_type_stand_in(monkeypatch)
    node = ros.add(Flow2ActionNode(context=ros.ctx, agent=fake_agent, parameter_overrides=ov(
        servo_command_type_service="/test_servo/switch_command_type")))
    assert node.servo is not None and node.servo.srv is srv_type and not node.servo.done
    asked = []

    def servo(request, response):  # refuses the first call, as a Servo still starting up might
        asked.append(request.transition.id)
        response.success = len(asked) > 1
        return response

    ros.probe.create_service(srv_type, "/test_servo/switch_command_type", servo)  # Servo comes up after the node
    assert ros.wait_for(lambda: node.servo.done, 15), asked
    assert asked == [1, 1]  # TWIST, retried after the refusal
    assert not ros.add(Flow2ActionNode(context=ros.ctx, node_name="f2a_sim", agent=fake_agent, parameter_overrides=ov(
        servo_command_type_service=""))).servo  # no Servo (the sim bridge): nothing is called


def test_frames_and_gripper_per_robot_profile(ros, fake_agent):
    """franka_ros2 poses in fr3_link0 are taken with robot.name fr3 (panda_link0 with panda); the
    gripper opening comes from the finger joints of sensor_msgs/JointState."""
    from sensor_msgs.msg import JointState

    from sof_ros.ros.flow2action_node import Flow2ActionNode
    from sof_ros.ros.params import RobotParams
    from sof_ros.ros.policy_node import PolicyNode

    fr3 = RobotParams.profile("fr3")
    assert (fr3.base_frame, fr3.ee_frame, fr3.moveit_group) == ("fr3_link0", "fr3_hand_tcp", "fr3_arm")
    node = ros.add(Flow2ActionNode(context=ros.ctx, agent=fake_agent, cli_args=yaml_args("fr3.yaml"),
                                   parameter_overrides=ov(servo_command_type_service="")))
    assert node.p.robot.base_frame == "fr3_link0" and node.p.joint_states_topic == "/joint_states"
    node._on_ee(cv.matrix_to_pose_stamped(np.eye(4) + _trans(0.4, 0.0, 0.3), 1, "fr3_link0"))
    assert node.ee_pos is not None and node.ee_pos[0] == pytest.approx(0.4)
    node.ee_pos = None
    node._on_ee(cv.matrix_to_pose_stamped(np.eye(4), 2, "panda_link0"))  # another robot's frame: refused
    assert node.ee_pos is None

    js = JointState()
    js.name = ["fr3_joint1", "fr3_finger_joint1", "fr3_finger_joint2"]
    js.position = [0.3, 0.02, 0.02]
    node._on_joint_states(js)
    assert node.gripper_state == pytest.approx(0.5)  # 0.04 m of 0.08 m: half open
    arm_only = JointState()
    arm_only.name, arm_only.position = ["fr3_joint1"], [0.1]
    node._on_joint_states(arm_only)  # the arm's own joint states on the same topic: opening kept
    assert node.gripper_state == pytest.approx(0.5)
    js.position = [0.3, 0.05, 0.05]
    node._on_joint_states(js)
    assert node.gripper_state == 1.0  # clipped

    pol = ros.add(PolicyNode(context=ros.ctx, agent=fake_agent, cli_args=yaml_args("fr3.yaml")))
    assert pol.p.robot.gripper_joint_names == ["fr3_finger_joint1", "fr3_finger_joint2"]
    js.position = [0.3, 0.0, 0.0]
    pol._on_joint_states(js)
    assert pol.gripper_state == 0.0  # closed


def test_frame_sync_pairs_colour_and_depth_within_the_stamp_tolerance():
    from sof_ros.ros.base import FrameSync

    rgb, depth = np.zeros((2, 2, 3), np.uint8), np.ones((2, 2), np.float32)
    exact = FrameSync(use_depth=True)
    assert exact.add_rgb(1_000_000, rgb) is None and exact.add_depth(1_004_000, depth) is None  # 4 ms apart: never
    sync = FrameSync(use_depth=True, tolerance_ns=15_000_000)
    assert sync.add_rgb(1_000_000_000, rgb) is None
    assert sync.add_depth(966_000_000, depth) is None  # the previous frame's depth (34 ms off): not this frame's
    f = sync.add_depth(1_004_000_000, depth * 2)  # aligned depth stamped 4 ms after the colour frame
    assert f is not None and f.stamp_ns == 1_000_000_000 and f.depth[0, 0] == 2.0  # carries the colour stamp
    assert sync.add_depth(1_003_000_000, depth) is None  # older than the depth used: dropped
    assert sync.add_depth(1_030_000_000, depth * 3) is None  # depth first this time
    f = sync.add_rgb(1_033_000_000, rgb)
    assert f is not None and f.stamp_ns == 1_033_000_000 and f.depth[0, 0] == 3.0
    assert sync.add_rgb(1_032_000_000, rgb) is None  # older than the last frame: never a frame


def test_frame_sync_knows_a_frame_published_again_under_its_stamp_for_a_repeat():
    """The sim bridge's lockstep re-publishes an unanswered frame under its stamp: the same frame, not a
    new control step -- also when the depth and masks of the repeat come first and are dropped as old."""
    from sof_ros.ros.base import FrameSync

    rgb, depth, mask = np.zeros((2, 2, 3), np.uint8), np.ones((2, 2), np.float32), np.ones((2, 2), bool)
    sync = FrameSync(use_depth=True, masks=("object_mask",))
    assert sync.add_depth(10, depth) is None and sync.add_mask("object_mask", 10, mask) is None
    first = sync.add_rgb(10, rgb)
    assert first is not None and not first.repeat
    assert sync.add_depth(10, depth) is None and sync.add_mask("object_mask", 10, mask) is None
    again = sync.add_rgb(10, rgb)
    assert again is not None and again.repeat and again.stamp_ns == 10 and again.masks["object_mask"] is mask
    assert sync.add_rgb(9, rgb) is None  # older: still never a frame
    sync.add_depth(11, depth), sync.add_mask("object_mask", 11, mask)
    nxt = sync.add_rgb(11, rgb)
    assert nxt is not None and not nxt.repeat
    # a frame that never completed (its depth lost): published again, it completes as a new frame
    assert sync.add_rgb(12, rgb) is None
    assert sync.add_depth(12, depth) is None
    late = sync.add_mask("object_mask", 12, mask)
    assert late is not None and late.stamp_ns == 12 and not late.repeat
    assert sync.add_rgb(12, rgb).repeat  # and its colour image, coming again too, is that frame again


def test_a_repeated_frame_is_no_new_control_step_for_the_policy_or_flow2action(ros, fake_agent, monkeypatch):
    """A frame the sim bridge published again while the policy was still planning on it: the policy
    does not count it towards the next re-plan, and Flow2Action neither acts on it a second time nor
    starts the new plan at step 1 (before, a plan slower than lockstep_timeout_s under load cost the
    simulator a plan step and the solver acted twice on one state: the graph's trajectory depended on
    the machine's load)."""
    from dataclasses import replace

    from sof_ros.ros.base import Frame
    from sof_ros.ros.flow2action_node import Flow2ActionNode
    from sof_ros.ros.policy_node import PolicyNode

    K = np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]])
    rgb, depth = np.zeros((48, 64, 3), np.uint8), np.ones((48, 64), np.float32)
    pol = ros.add(PolicyNode(context=ros.ctx, agent=fake_agent))  # replan_every 4
    monkeypatch.setattr(pol, "publish_plan", lambda plan, frame: None)
    pol._on_info(cv.camera_info_msg(K, 64, 48, 1, "cam"))
    pol.instruction, pol._new_instruction = "push the button", True
    t = pol.now_ns()
    for k in range(6):  # frames 0..5, frame 0 (new instruction) and 4 plan; each also arrives a second time
        f = Frame(t + k, rgb, depth)
        pol.on_frame(f)
        pol.on_frame(replace(f, repeat=True))
    assert len(fake_agent.plans) == 2
    pol._new_instruction = True  # a new instruction on a repeat: planned on that frame, as on any frame
    pol.on_frame(Frame(t + 5, rgb, depth, repeat=True))
    assert len(fake_agent.plans) == 3

    node = ros.add(Flow2ActionNode(context=ros.ctx, agent=fake_agent, parameter_overrides=ov(
        wait_for_replan=True, plan_timeout_s=30.0)))
    infos, requests = [], []
    monkeypatch.setattr(node.pub_info, "publish", lambda m: infos.append(cv.msg_to_command_info(m)))
    monkeypatch.setattr(node.pub_request, "publish", lambda m: requests.append(cv.stamp_to_ns(m.stamp)))
    node._on_info(cv.camera_info_msg(K, 64, 48, t, "cam"))
    node.safety.heartbeat("pose")
    node.ee_pos = node.ee.latest = np.array([0.0, 0.7, 0.2])
    flow = cv.flow_plan_to_msg(np.zeros((8, 2, 2, 2), np.float32), t, "cam")

    def frame(k, repeat=False):
        node.on_frame(Frame(t + k, rgb, depth, repeat=repeat))

    frame(0)
    frame(0, repeat=True)  # still waiting for the plan made on frame 0
    assert not fake_agent.acts and not infos and requests == [t]  # asked for, by its frame, once it came again
    node._add_part(t, tokens=np.array([1]), steps=8, size=(64, 48), actions=None, flow_msg=flow)
    assert fake_agent.acts == [0] and [i.frame_stamp_ns for i in infos] == [t]
    frame(0, repeat=True)  # answered already: the answer counts when it arrives; no second act
    frame(1)
    frame(1, repeat=True)
    assert fake_agent.acts == [0, 1] and [i.step_in_plan for i in infos] == [0, 1]
    for k in (2, 3, 4):
        frame(k)
    frame(4, repeat=True)  # the re-plan frame, waiting for its plan, comes again: still waiting
    assert fake_agent.acts == [0, 1, 2, 3] and requests[1:] == [t + 4]
    node._add_part(t + 4, tokens=np.array([2]), steps=8, size=(64, 48), actions=None,
                   flow_msg=cv.flow_plan_to_msg(np.zeros((8, 2, 2, 2), np.float32), t + 4, "cam"))
    assert fake_agent.acts == [0, 1, 2, 3, 0] and infos[-1].frame_stamp_ns == t + 4  # the new plan from its step 0


def test_the_policy_plans_on_the_frame_flow2action_waits_on(ros, fake_agent, monkeypatch):
    """wait_for_replan: Flow2Action names the frame it waits on. The policy plans on exactly that frame
    though its own count is behind (it lost frames while descheduled: it planned later, and the graph
    hung), and publishes a plan it made already again (made before Flow2Action subscribed, it never
    came, and the graph hung)."""
    from std_msgs.msg import Header

    from sof_ros.ros.base import Frame
    from sof_ros.ros.policy_node import PolicyNode

    K = np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]])
    rgb, depth = np.zeros((48, 64, 3), np.uint8), np.ones((48, 64), np.float32)
    pol = ros.add(PolicyNode(context=ros.ctx, agent=fake_agent))  # replan_every 4
    sent = []
    monkeypatch.setattr(pol.pub_flow, "publish", lambda m: sent.append(cv.stamp_to_ns(m.header.stamp)))
    monkeypatch.setattr(pol.pub_actions, "publish", lambda m: sent.append(cv.msg_to_actions(m)[1]))
    monkeypatch.setattr(pol.pub_tokens, "publish", lambda m: sent.append(cv.msg_to_tokens(m)[1]))
    pol._on_info(cv.camera_info_msg(K, 64, 48, 1, "cam"))
    t = pol.now_ns()
    pol._on_plan_request(Header(stamp=cv.ns_to_stamp(t)))  # no instruction yet: nothing to plan
    pol.instruction, pol._new_instruction = "push the button", True
    pol.on_frame(Frame(t, rgb, depth))
    assert len(fake_agent.plans) == 1 and sent == [t, t, t]
    pol._on_plan_request(Header(stamp=cv.ns_to_stamp(t)))  # the plan on frame t never reached flow2action
    assert len(fake_agent.plans) == 1 and sent == [t] * 6  # the same plan again, not a new one
    pol.on_frame(Frame(t + 2, rgb, depth))  # frame t + 1 lost on the way here
    pol._on_plan_request(Header(stamp=cv.ns_to_stamp(t + 4)))  # due at flow2action's step 4, not here yet
    pol.on_frame(Frame(t + 3, rgb, depth))
    assert len(fake_agent.plans) == 1
    pol.on_frame(Frame(t + 4, rgb, depth))  # the policy's own count says 3: planned because it is asked for
    assert len(fake_agent.plans) == 2 and sent[-1] == t + 4
    for k in (5, 6, 7):
        pol.on_frame(Frame(t + k, rgb, depth))
    pol._on_plan_request(Header(stamp=cv.ns_to_stamp(t + 7)))  # asked for a frame already here: planned now
    assert len(fake_agent.plans) == 3 and sent[-1] == t + 7
    pol.on_frame(Frame(t + 8, rgb, depth))  # the count starts again at the plan: no plan until t + 11
    assert len(fake_agent.plans) == 3
    pol._on_plan_request(Header(stamp=cv.ns_to_stamp(t + 4)))  # older than the last plan: nothing
    assert len(fake_agent.plans) == 3 and sent[-1] == t + 7


def test_planning_is_logged_once_per_period_not_per_plan(ros, fake_agent, monkeypatch):
    from sof_ros.ros.base import Frame
    from sof_ros.ros.policy_node import PolicyNode

    node = ros.add(PolicyNode(context=ros.ctx, agent=fake_agent, parameter_overrides=ov(depth_topic="")))
    lines = []
    monkeypatch.setattr(node, "get_logger", lambda: types_logger(lines))
    node._on_info(cv.camera_info_msg(np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]]), 64, 48, 1, "cam"))
    node.instruction = "push the button"
    plan, durations = fake_agent.plan, iter([0.0, 0.004, 0.008, 0.012, 0.016])

    def slower(obs, text):  # plans of different durations: the message carries each one's milliseconds
        time.sleep(next(durations))
        return plan(obs, text)

    monkeypatch.setattr(fake_agent, "plan", slower)
    for k in range(5):
        node._new_instruction = True
        node.on_frame(Frame(k + 1, np.zeros((48, 64, 3), np.uint8)))
    assert node.plans_published == 5
    assert sum("planning OK" in line for line in lines) == 1, lines


def test_camera_computes_flow_only_while_the_flow_topic_has_a_subscriber(ros):
    from sof_ros.ros.camera_node import CameraNode

    cam = ros.add(CameraNode(context=ros.ctx, parameter_overrides=ov(camera_pose_source="none")))
    calls = []
    cam._flow = lambda a, b: calls.append(1) or np.zeros(a.shape[:2] + (2,), np.float32)
    K = np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]])
    rgb = np.zeros((48, 64, 3), np.uint8)
    for t in (1, 2, 3):
        cam._emit(t, rgb, None, K)
    time.sleep(0.2)  # (a flow job would have been handed over synchronously; this only lets a wrong one run)
    assert not calls
    flows = ros.collect(Image, Topics.FLOW, sensor_qos(10))
    assert ros.wait_for(lambda: cam.pub_flow.get_subscription_count() >= 1, 10)
    cam._emit(4, rgb, None, K)
    assert ros.wait_for(lambda: calls and flows, 10)


def test_a_peer_with_incompatible_qos_is_named_and_nodes_carry_no_per_endpoint_event_handlers(ros, fake_agent):
    """`ros2 topic pub` without --qos-durability transient_local gives a volatile publisher, which the
    transient-local instruction subscription can never match: the policy node names the publisher
    and the policy, once. One graph check on a timer does this instead of rclpy's default QoS event
    handlers, two per endpoint, which the executor walked for every message (latency, docs/benchmarks.md)."""
    from sof_ros.ros.policy_node import PolicyNode

    pol = ros.add(PolicyNode(context=ros.ctx, agent=fake_agent))
    assert pol.subscriptions and pol.publishers
    assert not [h for e in (*pol.subscriptions, *pol.publishers) for h in e.event_handlers]
    ros.publisher(String, Topics.INSTRUCTION, latched_qos())  # compatible: never reported
    ros.publisher(String, Topics.POLICY_STATUS, latched_qos())  # another publisher: ours is a publisher there
    ros.collect(String, Topics.POLICY_STATUS, latched_qos())  # a subscriber of ours (the graph reports its
    ros.collect(Image, Topics.FLOW_PLAN, command_qos())  # QoS resolved: deadline infinite, not "default")
    time.sleep(2.5)
    assert pol._qos_watch.problems == []
    ros.publisher(String, Topics.INSTRUCTION, command_qos())  # volatile, as `ros2 topic pub` by default
    assert ros.wait_for(lambda: pol._qos_watch.problems, 10)
    time.sleep(2.5)  # later checks do not repeat it
    (problem,) = pol._qos_watch.problems
    assert "/probe" in problem and Topics.INSTRUCTION in problem and "durability" in problem.lower()


def test_an_unknown_plan_runtime_is_refused_whatever_the_row(ros, fake_agent):
    """A row without warm_up never reads agent.runtime: the node itself names the bad value."""
    from sof_ros.errors import SofError
    from sof_ros.ros.policy_node import PolicyNode

    with pytest.raises(SofError, match="agent.runtime must be one of"):
        PolicyNode(context=ros.ctx, agent=fake_agent, parameter_overrides=ov(agent__runtime="tensorrt"))


def test_frame_sync_completes_a_frame_only_with_every_mask():
    from sof_ros.ros.base import FrameSync

    rgb, depth, m = np.zeros((2, 2, 3), np.uint8), np.ones((2, 2), np.float32), np.eye(2, dtype=bool)
    sync = FrameSync(use_depth=True, masks=("object_mask", "robot_mask"), keep=3)
    assert sync.add_rgb(100, rgb) is None and sync.add_depth(100, depth) is None
    assert sync.add_mask("object_mask", 100, m) is None
    assert sync.add_mask("robot_mask", 99, ~m) is None  # another frame's mask does not complete this one
    assert sync.add_mask("other", 100, m) is None  # not a channel of this sync: ignored
    f = sync.add_mask("robot_mask", 100, m)
    assert f is not None and f.stamp_ns == 100 and f.depth is not None
    assert set(f.masks) == {"object_mask", "robot_mask"} and f.masks["object_mask"][0, 0] and f.masks["robot_mask"][1, 1]
    assert sync.add_mask("object_mask", 100, m) is None  # already used
    # masks first, colour last (the sim bridge publishes them before the frame)
    sync.add_mask("object_mask", 200, m)
    sync.add_mask("robot_mask", 200, m)
    sync.add_depth(200, depth)
    assert sync.add_rgb(200, rgb).stamp_ns == 200
    # nothing publishes robot masks: colour frames pile up to `keep` and the sync says what they wait for
    assert sync.starved() == []
    for s in (300, 400, 500):
        sync.add_depth(s, depth)
        sync.add_mask("object_mask", s, m)
        assert sync.add_rgb(s, rgb) is None
    assert sync.starved() == ["robot_mask"]
    plain = FrameSync(use_depth=False)
    assert plain.add_rgb(1, rgb).masks == {}  # no masks asked for: a colour image is a frame


def test_masks_travel_as_mono8_images():
    mask = np.zeros((3, 4), bool)
    mask[1, 2] = True
    msg = cv.mask_to_msg(mask, 7, "cam")
    assert (msg.encoding, msg.width, msg.height, cv.stamp_to_ns(msg.header.stamp)) == ("mono8", 4, 3, 7)
    np.testing.assert_array_equal(cv.msg_to_mask(msg), mask)
    with pytest.raises(cv.ConversionError, match="mono8"):
        cv.msg_to_mask(cv.image_to_msg(np.zeros((3, 4), np.float32), "32FC1"))


def test_flow2action_acts_on_a_frame_with_its_masks(ros, fake_agent, monkeypatch):
    """With mask topics set, a frame waits for its object and robot masks, and the agent sees them (the
    learning-free solver tracks the object they mark); a mask of another size stops the arm."""
    from sof_ros.ros.flow2action_node import Flow2ActionNode

    node = ros.add(Flow2ActionNode(context=ros.ctx, agent=fake_agent, parameter_overrides=ov(
        depth_topic="", object_mask_topic="/sof_test/object_mask", robot_mask_topic="/sof_test/robot_mask")))
    seen = []
    act = fake_agent.act
    monkeypatch.setattr(fake_agent, "act", lambda plan, obs, step: (seen.append(obs), act(plan, obs, step))[1])
    node._on_info(cv.camera_info_msg(np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]]), 64, 48, 1, "cam"))
    s = node.now_ns()
    node._on_ee(cv.matrix_to_pose_stamped(np.eye(4), s, "world"))
    node._on_flow_plan(cv.flow_plan_to_msg(np.zeros((8, 4, 4, 2), np.float32), s, "cam"))
    node._on_actions(cv.actions_to_msg(None, s))
    node._on_tokens(cv.tokens_to_msg(np.array([1, 2]), s, 8, (64, 48)))
    obj = np.zeros((48, 64), bool)
    obj[10:20, 30:40] = True
    node._on_image(cv.image_to_msg(np.zeros((48, 64, 3), np.uint8), "rgb8", s, "cam"))
    node._on_mask("object_mask", cv.mask_to_msg(obj, s, "cam"))
    assert not seen and node.commands_published == 0  # the robot mask is still missing
    node._on_mask("robot_mask", cv.mask_to_msg(~obj, s, "cam"))
    assert len(seen) == 1 and node.commands_published == 1
    np.testing.assert_array_equal(seen[0].object_mask, obj)
    np.testing.assert_array_equal(seen[0].robot_mask, ~obj)
    s2 = s + 100_000_000
    node._on_mask("object_mask", cv.mask_to_msg(np.zeros((24, 32), bool), s2, "cam"))
    node._on_mask("robot_mask", cv.mask_to_msg(np.zeros((48, 64), bool), s2, "cam"))
    zeros = node.zero_twists_published
    node._on_image(cv.image_to_msg(np.zeros((48, 64, 3), np.uint8), "rgb8", s2, "cam"))
    assert len(seen) == 1 and node.zero_twists_published == zeros + 1
    assert "object_mask 32x24 does not match the image 64x48" in node.last_reason


def test_a_stall_in_flow2action_makes_the_policy_nodes_next_plan_a_fresh_sample(ros, fake_agent, monkeypatch):
    """The learning-free solver acts in Flow2Action, the planner plans in the policy node: a stall is
    sent once on the fresh-plan topic (when it starts), and the policy node's agent is asked for a
    sampled plan, as sof-eval's agent samples after its own solver stalled."""
    from sof_ros.ros.flow2action_node import Flow2ActionNode
    from sof_ros.ros.policy_node import PolicyNode

    fresh = ros.collect(String, Topics.FRESH_PLAN, command_qos(10))
    f2a = ros.add(Flow2ActionNode(context=ros.ctx, agent=fake_agent, parameter_overrides=ov(depth_topic="")))
    planner = type("Planner", (), {"requests": 0, "request_fresh_plan": lambda self: setattr(self, "requests", self.requests + 1)})()
    pol = ros.add(PolicyNode(context=ros.ctx, agent=fake_agent, parameter_overrides=ov(depth_topic="")))
    pol.agent = planner
    f2a.agent.wants_fresh_plan, f2a.agent.last_reason = False, ""
    for wanted in (False, True, True, True, False, True):  # two stalls
        f2a.agent.wants_fresh_plan = wanted
        if wanted:
            f2a.agent.last_reason = "stalled 10 steps: backing off and asking for a fresh plan"
        f2a._ask_for_fresh_plan()
    assert ros.wait_for(lambda: len(fresh) == 2 and planner.requests == 2, 10), (len(fresh), planner.requests)
    assert fresh[0].data.startswith("stalled 10 steps")
