"""Every ROS parameter of every sof_ros node, with its default and description, in one place.

Nodes declare these (with `ParameterDescriptor(description=...)`) through
`sof_ros.ros.base.declare_params`; config/{sim,panda,sawyer}.yaml override a subset in the standard
`node_name: ros__parameters: {...}` format. Nested dataclasses become dotted parameter names
(`robot.workspace_min`), i.e. nested mappings in the YAML files.

Robot profiles: a node's `robot.name` selects one of `ROBOT_PROFILES`, which supplies the defaults of
all other `robot.*` parameters; the YAML files may still override each of them.

This module is pure Python (no rclpy) so graph.py, the launch files and tests can read it anywhere.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from sof_ros.safety import RobotLimits, WatchdogTimeouts


def P(default: Any, help: str):  # noqa: A002 - "help" reads best at the call sites
    """A parameter field: default + the description shown by `ros2 param describe`."""
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata={"help": help})
    return field(default=default, metadata={"help": help})


class Topics:
    """Default topic names (absolute, so nodes can be renamed or composed freely)."""

    # sim bridge (MetaWorld as a robot)
    SIM_IMAGE = "/sof/sim/image"
    SIM_DEPTH = "/sof/sim/depth"
    SIM_CAMERA_INFO = "/sof/sim/camera_info"
    SIM_CAMERA_POSE = "/sof/sim/camera_pose"
    SIM_JOINT_STATES = "/sof/sim/joint_states"
    SIM_EE_POSE = "/sof/sim/ee_pose"
    SIM_GRIPPER_STATE = "/sof/sim/gripper_state"
    SIM_SUCCESS = "/sof/sim/success"
    SIM_STEPS = "/sof/sim/steps"
    SIM_OBJECT_MASK = "/sof/sim/object_mask"
    SIM_ROBOT_MASK = "/sof/sim/robot_mask"
    SIM_RESET = "/sof/sim/reset"
    SIM_TASK = "/sof/sim/task"
    # camera node outputs
    IMAGE = "/sof/camera/image"
    DEPTH = "/sof/camera/depth"
    CAMERA_INFO = "/sof/camera/camera_info"
    CAMERA_POSE = "/sof/camera/pose"
    FLOW = "/sof/camera/flow"
    # policy node
    INSTRUCTION = "/sof/instruction"
    TOKENS = "/sof/policy/tokens"
    FLOW_PLAN = "/sof/policy/flow_plan"
    ACTION_CHUNK = "/sof/policy/action_chunk"
    PLAN_IMAGE = "/sof/policy/plan_image"
    MARKERS = "/sof/policy/markers"
    POLICY_STATUS = "/sof/policy/status"
    # flow2action node
    TWIST = "/sof/cmd/twist"
    GRIPPER = "/sof/cmd/gripper"
    POSE_TARGET = "/sof/cmd/pose_target"
    STATUS = "/sof/flow2action/status"
    COMMAND_INFO = "/sof/flow2action/command_info"
    FRESH_PLAN = "/sof/flow2action/fresh_plan"
    PLAN_REQUEST = "/sof/flow2action/plan_request"
    ESTOP = "/sof/estop"
    ESTOP_CLEAR = "/sof/estop_clear"


# The per-frame masks a Flow2Action node may wait for and the sim bridge publishes: <name>_topic
# parameters of both, FrameSync channels and AgentInput fields of the same names.
MASKS = ("object_mask", "robot_mask")


# --- robots ----------------------------------------------------------------------------------
@dataclass
class RobotParams:
    name: str = P("metaworld_sawyer", "robot profile: panda | fr3 | sawyer | metaworld_sawyer; supplies the defaults of every other robot.* parameter")
    base_frame: str = P("world", "frame of twists, pose targets, the workspace box and the end-effector poses read (franka_ros2: <arm>_link0)")
    ee_frame: str = P("right_hand", "end-effector (tool centre point) frame / link")
    camera_frame: str = P("corner_camera_optical_frame", "optical frame of the camera the policy sees through (x right, y down, z forward)")
    joint_names: list[str] = P(["right_j0", "right_j1", "right_j2", "right_j3", "right_j4", "right_j5", "right_j6"], "arm joint names, base to tip")
    gripper_joint_names: list[str] = P(["r_close", "l_close"], "finger joint names; with joint_states_topic set, the gripper "
                                       "opening is the sum of their positions / gripper_max_opening")
    gripper_max_opening: float = P(1.0, "sum of the finger joint positions (m) when fully open: reads as opening 1.0, closed "
                                   "as 0.0 (the MetaWorld convention the action head was trained on)")
    workspace_min: list[float] = P([-0.5, 0.4, 0.05], "lower corner of the end-effector workspace box, metres in base_frame")
    workspace_max: list[float] = P([0.5, 1.0, 0.5], "upper corner of the end-effector workspace box, metres in base_frame")
    max_linear_speed: float = P(0.2, "end-effector linear speed limit, m/s (norm)")
    max_angular_speed: float = P(0.5, "end-effector angular speed limit, rad/s (norm)")
    control_rate_hz: float = P(10.0, "control steps per second: one policy action per camera frame at this rate")
    metres_per_action_unit: float = P(0.01, "end-effector displacement per control step for action 1.0 (MetaWorld: 0.01 m)")
    moveit_group: str = P("right_arm", "MoveIt planning group for pose targets (moveit_py)")
    moveit_ee_link: str = P("right_hand", "MoveIt link that pose targets refer to")
    target_orientation: list[float] = P([0.0, 1.0, 0.0, 0.0], "fixed end-effector orientation (qx, qy, qz, qw) for pose targets")

    def limits(self) -> RobotLimits:
        return RobotLimits(workspace_min=tuple(self.workspace_min), workspace_max=tuple(self.workspace_max),
                           max_linear_speed=float(self.max_linear_speed), max_angular_speed=float(self.max_angular_speed))

    @classmethod
    def profile(cls, name: str) -> "RobotParams":
        if name not in ROBOT_PROFILES:
            raise ValueError(f"unknown robot '{name}'; choose one of: {', '.join(ROBOT_PROFILES)}")
        return dataclasses.replace(ROBOT_PROFILES[name])


# Conservative defaults for learned-policy execution; calibrate the workspace box per cell.
_PANDA = RobotParams(
    name="panda", base_frame="panda_link0", ee_frame="panda_hand_tcp",
    camera_frame="camera_color_optical_frame",
    joint_names=[f"panda_joint{i}" for i in range(1, 8)],
    gripper_joint_names=["panda_finger_joint1", "panda_finger_joint2"],
    workspace_min=[0.25, -0.35, 0.02], workspace_max=[0.75, 0.35, 0.60],
    max_linear_speed=0.15, max_angular_speed=0.5, control_rate_hz=10.0,
    moveit_group="panda_arm", moveit_ee_link="panda_hand_tcp", target_orientation=[1.0, 0.0, 0.0, 0.0],
    gripper_max_opening=0.08,  # Franka Hand: two fingers of 0..0.04 m
)
ROBOT_PROFILES: dict[str, RobotParams] = {
    # MetaWorld's Sawyer: world frame, mocap box of the MetaWorld arm, 0.01 m per action unit.
    # Full-scale actions on all three axes at 10 Hz are 0.173 m/s, so 0.2 m/s never clips the policy.
    "metaworld_sawyer": RobotParams(),
    "panda": _PANDA,
    # Franka Research 3 with franka_ros2 (robot_type fr3): the Panda's hand and limits, fr3_* names
    # (poses in fr3_link0, fingers fr3_finger_joint1/2, MoveIt group fr3_arm).
    "fr3": dataclasses.replace(
        _PANDA, name="fr3", base_frame="fr3_link0", ee_frame="fr3_hand_tcp",
        joint_names=[f"fr3_joint{i}" for i in range(1, 8)],
        gripper_joint_names=["fr3_finger_joint1", "fr3_finger_joint2"],
        moveit_group="fr3_arm", moveit_ee_link="fr3_hand_tcp"),
    "sawyer": RobotParams(
        name="sawyer", base_frame="base", ee_frame="right_hand",
        camera_frame="camera_color_optical_frame",
        joint_names=[f"right_j{i}" for i in range(7)],
        gripper_joint_names=["right_gripper_l_finger_joint", "right_gripper_r_finger_joint"],
        workspace_min=[0.35, -0.40, -0.15], workspace_max=[0.90, 0.40, 0.45],
        max_linear_speed=0.15, max_angular_speed=0.5, control_rate_hz=10.0,
        moveit_group="right_arm", moveit_ee_link="right_hand", target_orientation=[0.0, 1.0, 0.0, 0.0],
        gripper_max_opening=0.0417,  # Rethink electric gripper, standard fingers: calibrate for yours
    ),
}


@dataclass
class QosParams:
    sensor_depth: int = P(2, "keep-last depth of best-effort sensor topics (images, depth, camera_info, joint states)")
    command_depth: int = P(10, "keep-last depth of reliable command / plan topics")


# --- agent (shared by policy and flow2action) ---------------------------------------------------
@dataclass
class AgentParams:
    checkpoint: str = P("models/sof_metaworld", "SOF checkpoint directory (written by sof-train)")
    policy: str = P("sof", "policy row to run (sof_ros.policies.ROWS: sof, sof_learning_free, skill2action, bc, "
                    "pixel_skills), or module:Class implementing the Policy interface (load/reset/plan/act)")
    device: str = P("cpu", "torch device for the policy")
    replan_every: int = P(0, "control steps between re-plans; 0 = the checkpoint's own replan_every")
    torch_threads: int = P(1, "intra-op threads per node, torch and onnxruntime (0 = torch default)")
    runtime: str = P("onnxruntime", "what runs the plan networks in the policy node: onnxruntime (exported at start-up from "
                     "the loaded weights, CPU, ~2.5x faster than torchscript at batch 1) | torchscript | eager; kept only "
                     "if it plans like eager torch on check inputs, else torchscript (logged)")


# --- nodes -----------------------------------------------------------------------------------
@dataclass
class CameraNodeParams:
    source: str = P("sim", "where frames come from: sim (the sim bridge topics) | topic (any ROS camera driver) | realsense (pyrealsense2)")
    rate_hz: float = P(0.0, "maximum publish rate; 0 = forward every input frame (sim, topic); realsense polls at realsense.fps when 0")
    frame_id: str = P("corner_camera_optical_frame", "optical frame id stamped on published images and camera_info")
    working_width: int = P(0, "width of the published frames, depth, camera_info and flow: the size the policy was trained "
                           "on (config files: 128); the node resizes (colour: area, depth: nearest, K scaled); 0 = as captured")
    working_height: int = P(0, "height of the published frames (see working_width); 0 = as captured")
    base_frame: str = P("world", "frame of the published camera pose (camera-to-base)")
    image_in_topic: str = P(Topics.SIM_IMAGE, "colour input (source sim/topic)")
    depth_in_topic: str = P(Topics.SIM_DEPTH, "depth input (source sim/topic); empty = no depth")
    camera_info_in_topic: str = P(Topics.SIM_CAMERA_INFO, "camera_info input (source sim/topic)")
    camera_pose_in_topic: str = P(Topics.SIM_CAMERA_POSE, "camera pose input when camera_pose_source = topic")
    depth_uint16_scale: float = P(0.001, "metres per unit of 16UC1 depth inputs (RealSense / REP 118: millimetres)")
    sync_tolerance_s: float = P(0.015, "colour and depth images pair when their stamps differ by at most this (source topic: "
                                "a driver may stamp aligned depth a few ms off the colour frame); below half a frame period")
    camera_pose_source: str = P("topic", "camera-to-base pose: topic | param (camera_pose) | tf (tf2_ros, base_frame <- frame_id) | none")
    camera_pose: list[float] = P([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0], "static camera-to-base pose [x, y, z, qx, qy, qz, qw] (camera_pose_source = param)")
    image_topic: str = P(Topics.IMAGE, "output: rgb8 frames stamped with their capture time")
    depth_topic: str = P(Topics.DEPTH, "output: 32FC1 depth in metres, same stamp as the frame")
    camera_info_topic: str = P(Topics.CAMERA_INFO, "output: the camera model used")
    camera_pose_topic: str = P(Topics.CAMERA_POSE, "output: camera-to-base PoseStamped (transient local)")
    flow_topic: str = P(Topics.FLOW, "output: 32FC2 optical flow from the previous published frame to this one, pixels")
    flow_enabled: bool = P(True, "compute and publish optical flow")
    flow_estimator: str = P("dis", "sof_ros.flow.estimators.make_estimator name")
    realsense_width: int = P(640, "RealSense colour/depth width (a camera; a recording plays at its own size)")
    realsense_height: int = P(480, "RealSense colour/depth height (a camera; a recording plays at its own size)")
    realsense_fps: int = P(30, "RealSense stream rate (a camera; a recording plays at its own rate)")
    realsense_serial: str = P("", "RealSense serial number; empty = first device (not with realsense_bag)")
    realsense_bag: str = P("", "play this RealSense recording (.db3 as librealsense 2.59 records it; docs/realsense.md) "
                           "instead of a camera, through the same pipeline, alignment and intrinsics; empty = a camera")
    realsense_bag_repeat: bool = P(True, "loop the recording (realsense_bag); false: stop publishing at its end")
    qos: QosParams = field(default_factory=QosParams)


@dataclass
class PolicyNodeParams:
    agent: AgentParams = field(default_factory=AgentParams)
    robot: RobotParams = field(default_factory=RobotParams)
    instruction_topic: str = P(Topics.INSTRUCTION, "std_msgs/String instruction (reliable, transient local); a new one triggers a re-plan")
    unknown_instruction: str = P("refuse", "an instruction the checkpoint has no embedding for (was not trained on): refuse "
                                 "(planning stops, said on status_topic) | warn (embed it with the language model, loaded at "
                                 "start-up, and plan; the policy has never seen it)")
    max_instruction_chars: int = P(1000, "longer instructions are refused (the encoder reads 256 tokens at most)")
    status_topic: str = P(Topics.POLICY_STATUS, "output: std_msgs/String (transient local), what the node does with the "
                          "current instruction: planning, refused and why")
    image_topic: str = P(Topics.IMAGE, "rgb8 frames from the camera node")
    depth_topic: str = P(Topics.DEPTH, "32FC1 depth from the camera node; empty = plan without depth")
    camera_info_topic: str = P(Topics.CAMERA_INFO, "camera model")
    camera_pose_topic: str = P(Topics.CAMERA_POSE, "camera-to-base pose")
    ee_pose_topic: str = P(Topics.SIM_EE_POSE, "end-effector PoseStamped in the base frame (the learned action head's proprioception); empty = not used")
    gripper_state_topic: str = P(Topics.SIM_GRIPPER_STATE, "std_msgs/Float64 gripper opening for the agent's proprioception; empty = not used")
    joint_states_topic: str = P("", "sensor_msgs/JointState with the finger joints (robot.gripper_joint_names): the gripper "
                                "opening for the agent's proprioception on a real arm (franka_ros2: /joint_states); empty = not used")
    sync_tolerance_s: float = P(0.015, "colour and depth images pair when their stamps differ by at most this")
    tokens_topic: str = P(Topics.TOKENS, "output: skill tokens (Int64MultiArray, header block in data_offset padding)")
    flow_plan_topic: str = P(Topics.FLOW_PLAN, "output: decoded flow plan, 32FC2, T fields stacked vertically")
    action_chunk_topic: str = P(Topics.ACTION_CHUNK, "output: the plan's action chunk (Float64MultiArray, T x 4, header block in data_offset padding; empty when the head predicts none)")
    fresh_plan_topic: str = P(Topics.FRESH_PLAN, "std_msgs/String from flow2action: its solver stalled on the current "
                              "plan, so the next plan is sampled (the learning-free rows' replan_temperature) instead of "
                              "the same greedy plan again; empty = not subscribed")
    plan_request_topic: str = P(Topics.PLAN_REQUEST, "std_msgs/Header from flow2action (wait_for_replan): the frame, by "
                                "its stamp, it waits on for a plan; planned on at once, or the plan made on it published "
                                "again (flow2action missed it); empty = not subscribed")
    plan_image_topic: str = P(Topics.PLAN_IMAGE, "output: rgb8 visualisation of the plan over the frame")
    markers_topic: str = P(Topics.MARKERS, "output: MarkerArray arrows of the planned motion, camera optical frame")
    marker_stride: int = P(16, "pixel spacing of the arrow grid in markers and plan image")
    marker_min_flow_px: float = P(0.5, "arrows shorter than this (pixels) are not drawn")
    marker_default_depth_m: float = P(1.0, "depth used for marker arrows where no depth is known")
    plan_image_scale: int = P(2, "upscaling of the plan visualisation image")
    plan_image_gain: float = P(0.0, "magnification of the planned motion in the plan image (noted on it); 0 = auto, the longest track drawn ~10% of the image (at most x6)")
    qos: QosParams = field(default_factory=QosParams)


@dataclass
class Flow2ActionNodeParams:
    agent: AgentParams = field(default_factory=AgentParams)
    robot: RobotParams = field(default_factory=RobotParams)
    image_topic: str = P(Topics.IMAGE, "rgb8 frames from the camera node")
    depth_topic: str = P(Topics.DEPTH, "32FC1 depth; empty = act without depth")
    camera_info_topic: str = P(Topics.CAMERA_INFO, "camera model")
    camera_pose_topic: str = P(Topics.CAMERA_POSE, "camera-to-base pose")
    ee_pose_topic: str = P(Topics.SIM_EE_POSE, "end-effector PoseStamped in robot.base_frame (required: the workspace box is enforced on it)")
    gripper_state_topic: str = P(Topics.SIM_GRIPPER_STATE, "std_msgs/Float64 gripper opening for the agent's proprioception; empty = not used")
    joint_states_topic: str = P("", "sensor_msgs/JointState with the finger joints (robot.gripper_joint_names): the gripper "
                                "opening for the agent's proprioception on a real arm (franka_ros2: /joint_states); empty = not used")
    sync_tolerance_s: float = P(0.015, "colour and depth images (and masks) pair when their stamps differ by at most this")
    object_mask_topic: str = P("", "sensor_msgs/Image mono8 (nonzero = the objects the instruction is about) stamped as "
                               "the frame it segments, at the frames' size: the learning-free rows' object mask (sim: "
                               "the sim bridge's segmentation; a robot: any segmentation node). A frame waits for its "
                               "mask. Empty = no mask source: the solver tracks the plan's moving pixels that are not the arm")
    robot_mask_topic: str = P("", "sensor_msgs/Image mono8 (nonzero = the arm's hand and fingers) stamped as the frame, "
                              "for the learning-free rows (sim: the sim bridge's segmentation); a frame waits for it. Empty = none")
    tokens_topic: str = P(Topics.TOKENS, "skill tokens from the policy node")
    flow_plan_topic: str = P(Topics.FLOW_PLAN, "flow plan from the policy node")
    action_chunk_topic: str = P(Topics.ACTION_CHUNK, "the plan's action chunk from the policy node")
    output_mode: str = P("twist", "twist (MoveIt Servo / sim bridge) | pose (pose targets, moveit_py if use_moveit_py) | both")
    twist_topic: str = P(Topics.TWIST, "output: geometry_msgs/TwistStamped in robot.base_frame, stamped when published "
                         "(MoveIt Servo drops a twist older than its incoming_command_timeout)")
    command_info_topic: str = P(Topics.COMMAND_INFO, "output: std_msgs/Int64MultiArray per command: [command stamp, frame "
                                "stamp, plan stamp, step in plan, is zero] (which frame and plan each command answers)")
    gripper_topic: str = P(Topics.GRIPPER, "output: std_msgs/Float64 gripper command in [-1 open, +1 close]")
    pose_target_topic: str = P(Topics.POSE_TARGET, "output: PoseStamped end-effector target (output_mode pose|both)")
    status_topic: str = P(Topics.STATUS, "output: std_msgs/String, the reason of the last safety decision")
    fresh_plan_topic: str = P(Topics.FRESH_PLAN, "output: std_msgs/String (the reason) when the agent asks for a fresh "
                              "plan (the learning-free solver stalled); the policy node samples its next plan")
    plan_request_topic: str = P(Topics.PLAN_REQUEST, "output (wait_for_replan only): std_msgs/Header, stamp = a frame "
                                "waiting for a plan (the first one, or a re-plan due) that the sim bridge published again, so "
                                "the policy plans on exactly that frame whichever frames it lost; empty = off")
    estop_topic: str = P(Topics.ESTOP, "std_msgs/Bool; true latches the e-stop (false does NOT clear it)")
    estop_clear_topic: str = P(Topics.ESTOP_CLEAR, "std_msgs/Bool; true clears a latched e-stop")
    servo_command_type_service: str = P("/servo_node/switch_command_type", "MoveIt Servo's moveit_msgs/srv/ServoCommandType "
                                        "service: called at start-up (retried until it answers) to switch Servo to TWIST "
                                        "commands, which Jazzy's Servo needs before it accepts twists; empty = do not call")
    moveit_config: str = P("", "use_moveit_py: YAML file with the MoveIt configuration for MoveItPy(config_dict=...), e.g. "
                           "MoveItConfigsBuilder('fr3', package_name='franka_fr3_moveit_config').to_moveit_configs().to_dict() "
                           "dumped with yaml.safe_dump (a ROS params file '<node>: ros__parameters: {...}' works too)")
    estop_state_dir: str = P("", "directory of the e-stop state file (<node name>.estop.json, written and fsynced before a "
                             "stop or clear is acknowledged) that makes a latched e-stop survive a restart of this node; "
                             "empty = $ROS_HOME/sof_ros (~/.ros/sof_ros). Must be writable: the node refuses to start otherwise")
    use_moveit_py: bool = P(False, "execute pose targets through moveit_py (must be installed)")
    pose_lookahead_steps: int = P(4, "pose target = end-effector + this many steps of the current action")
    pose_rate_hz: float = P(2.0, "maximum rate of moveit_py plan+execute requests")
    wait_for_replan: bool = P(False, "when a re-plan is due, wait for the new plan instead of continuing the old one (sim: exact eval semantics)")
    watchdog_rate_hz: float = P(20.0, "watchdog timer rate; publishes a zero twist while any input is stale")
    frame_timeout_s: float = P(0.5, "frames older than this stop the robot")
    plan_timeout_s: float = P(5.0, "a plan older than this stops the robot")
    command_timeout_s: float = P(0.5, "no new command for this long stops the robot")
    pose_timeout_s: float = P(0.5, "an end-effector pose older than this stops the robot")
    qos: QosParams = field(default_factory=QosParams)


@dataclass
class SimBridgeParams:
    robot: RobotParams = field(default_factory=RobotParams)
    sim: str = P("metaworld", "simulator playing the robot: metaworld (Sawyer) | libero (Franka Panda, robot.name panda)")
    suite: str = P("", "libero: suite of the task (libero_goal | libero_10 | ...); empty = look the name up")
    task: str = P("button-press-topdown", "task: a MetaWorld task (without -v3) or a LIBERO task name")
    seed: int = P(0, "seed of the first episode (libero: 0..49 = LIBERO's fixed initial states)")
    camera: str = P("corner", "simulator camera name (MetaWorld: corner, ...; LIBERO: agentview, ...)")
    width: int = P(128, "rendered width, pixels")
    height: int = P(128, "rendered height, pixels")
    rate_hz: float = P(10.0, "sim control steps per second (must equal the controller's robot.control_rate_hz)")
    lockstep: bool = P(True, "step only when the command answering the last frame arrived (or lockstep_timeout_s passed)")
    lockstep_timeout_s: float = P(3.0, "lockstep: a frame unanswered this long is published again, under its stamp; the "
                                  "simulator does not step")
    max_steps: int = P(500, "steps per episode before the sim holds still; 0 = unlimited")
    command_timeout_s: float = P(0.5, "a twist older than this counts as zero motion")
    render_shadows: bool = P(False, "MuJoCo shadows/reflections (slow on CPU)")
    antialias: bool = P(True, "MetaWorld: MuJoCo's 4x multisampling of the colour frames. Render as the checkpoint's "
                        "training frames were: sof-bringup and the launch files set it from the policy's checkpoint "
                        "(config.yaml sim.antialias) unless a parameter file or override sets it")
    image_topic: str = P(Topics.SIM_IMAGE, "output: rgb8 frames, stamped at render time")
    depth_topic: str = P(Topics.SIM_DEPTH, "output: 32FC1 depth, metres")
    camera_info_topic: str = P(Topics.SIM_CAMERA_INFO, "output: camera model")
    camera_pose_topic: str = P(Topics.SIM_CAMERA_POSE, "output: camera-to-world PoseStamped (transient local)")
    joint_states_topic: str = P(Topics.SIM_JOINT_STATES, "output: sensor_msgs/JointState")
    ee_pose_topic: str = P(Topics.SIM_EE_POSE, "output: end-effector PoseStamped, world frame")
    gripper_state_topic: str = P(Topics.SIM_GRIPPER_STATE, "output: std_msgs/Float64 gripper opening (MetaWorld obs[3])")
    success_topic: str = P(Topics.SIM_SUCCESS, "output: std_msgs/Bool task success so far this episode (transient local)")
    steps_topic: str = P(Topics.SIM_STEPS, "output: std_msgs/Int32 control steps taken this episode, with every frame "
                         "(transient local): max_steps there means the episode is over")
    object_mask_topic: str = P(Topics.SIM_OBJECT_MASK, "output: mono8 segmentation of the task's objects (255 inside), "
                               "stamped as the frame; not published for a scene without an object list. Empty = off")
    robot_mask_topic: str = P(Topics.SIM_ROBOT_MASK, "output: mono8 segmentation of the arm's hand and fingers, stamped as "
                              "the frame. Empty = off")
    twist_topic: str = P(Topics.TWIST, "input: TwistStamped end-effector velocity, world frame")
    command_info_topic: str = P(Topics.COMMAND_INFO, "input: flow2action's command info; lockstep steps once the command "
                                "answering the last frame (and its twist) arrived")
    gripper_topic: str = P(Topics.GRIPPER, "input: std_msgs/Float64 gripper command [-1, 1]")
    reset_topic: str = P(Topics.SIM_RESET, "input: std_msgs/Int32 seed; resets the episode")
    task_topic: str = P(Topics.SIM_TASK, "input: std_msgs/String task name; switches task and resets")
    qos: QosParams = field(default_factory=QosParams)


@dataclass
class RecorderNodeParams:
    path: str = P("sof_run.mcap", "output MCAP file")
    topics: list[str] = P([Topics.INSTRUCTION, Topics.IMAGE, Topics.DEPTH, Topics.CAMERA_INFO, Topics.FLOW,
                           Topics.TOKENS, Topics.FLOW_PLAN, Topics.ACTION_CHUNK, Topics.PLAN_IMAGE, Topics.MARKERS, Topics.TWIST,
                           Topics.GRIPPER, Topics.STATUS, Topics.COMMAND_INFO, Topics.SIM_EE_POSE, Topics.SIM_JOINT_STATES,
                           Topics.SIM_GRIPPER_STATE, Topics.CAMERA_POSE, Topics.SIM_SUCCESS],
                        "topics to record (types are discovered from the graph); the defaults hold all that "
                        "sof-import-mcap needs to turn a recording into action-labelled episodes")
    discovery_period_s: float = P(0.5, "how often to look for publishers of not-yet-subscribed topics")


# node name -> (params class, python module, console script)
NODES: dict[str, tuple[type, str, str]] = {
    "sof_sim_bridge": (SimBridgeParams, "sof_ros.ros.sim_bridge_node", "sof-sim-bridge"),
    "sof_camera": (CameraNodeParams, "sof_ros.ros.camera_node", "sof-camera-node"),
    "sof_policy": (PolicyNodeParams, "sof_ros.ros.policy_node", "sof-policy-node"),
    "sof_flow2action": (Flow2ActionNodeParams, "sof_ros.ros.flow2action_node", "sof-flow2action-node"),
    "sof_recorder": (RecorderNodeParams, "sof_ros.ros.recorder_node", "sof-recorder-node"),
}


def _sub_dataclass(f: dataclasses.Field):
    fac = f.default_factory
    return fac if fac is not dataclasses.MISSING and isinstance(fac, type) and dataclasses.is_dataclass(fac) else None


def iter_fields(cls: type, prefix: str = ""):
    """Yield (dotted name, dataclass field) for every leaf parameter of a params dataclass."""
    for f in dataclasses.fields(cls):
        sub = _sub_dataclass(f)
        if sub is not None:
            yield from iter_fields(sub, prefix + f.name + ".")
        else:
            yield prefix + f.name, f


def field_kind(f: dataclasses.Field) -> str:
    """'bool' | 'int' | 'float' | 'str' | 'list[float]' | 'list[str]' from the annotation string."""
    t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    t = t.replace(" ", "")
    if t in ("bool", "int", "float", "str", "list[float]", "list[str]"):
        return t
    raise TypeError(f"parameter field {f.name} has unsupported type {t}")


def defaults(cls: type) -> dict[str, Any]:
    """Flat {dotted name: default} of a params dataclass (robot.* from its default profile)."""
    return flatten(dataclasses.asdict(cls()))


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, prefix + k + "."))
        else:
            out[prefix + k] = v
    return out


def unflatten(flat: dict[str, Any]) -> dict:
    out: dict = {}
    for k, v in flat.items():
        cur = out
        parts = k.split(".")
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = v
    return out


def build(cls: type, flat: dict[str, Any]):
    """Instantiate a params dataclass from flat dotted values (missing keys keep defaults;
    robot.* defaults follow robot.name's profile)."""
    def make(c: type, prefix: str):
        kwargs = {}
        base = c.profile(flat[prefix + "name"]) if c is RobotParams and (prefix + "name") in flat else c()
        for f in dataclasses.fields(c):
            key = prefix + f.name
            sub = _sub_dataclass(f)
            if sub is not None:
                kwargs[f.name] = make(sub, key + ".")
            elif key in flat:
                kwargs[f.name] = flat[key]
            else:
                kwargs[f.name] = getattr(base, f.name)
        return c(**kwargs)
    return make(cls, "")


def watchdog_timeouts(p: Flow2ActionNodeParams) -> WatchdogTimeouts:
    return WatchdogTimeouts(frame=p.frame_timeout_s, plan=p.plan_timeout_s, command=p.command_timeout_s,
                            pose=p.pose_timeout_s)
