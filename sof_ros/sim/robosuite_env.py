"""robosuite's standard tasks (robosuite 1.4, the version LIBERO pins) with any of its arms -- the
Franka Panda, the Rethink Sawyer, ... -- in the same scenes, seen by the same fixed camera: the
cross-embodiment benchmark (`sof-bench transfer`, docs/transfer.md).

The arm reuses `LiberoArm`'s machinery unchanged (it is a subclass): the same 4-D action
[dx, dy, dz, grip] at 10 Hz (one control step = 2 robosuite steps of its OSC_POSE controller at
20 Hz, the end-effector target moving 0.01 m per action unit, the gripper held at its initial
orientation), poses in the robot's base frame (`panda_link0` for the Panda, `base` for the Sawyer:
the frames their ROS drivers use), the fast renderer, the camera model and the privileged state
(`LiberoState`) the scripted experts read. What differs from LIBERO: the robosuite environment
itself, seeded placements instead of LIBERO's init states, a fixed camera per scene that frames the
workspace for every arm (`SCENE_CAMERAS`, written into the scene as `sof_front`), the gripper
opening normalised per gripper model, and object/hand masks from the segmentation (for the
learning-free Flow2Action).

Tasks (`TASKS`): Lift, Stack and StackGreenOnRed (Stack's scene, the cubes' roles swapped), each
with one instruction. Episodes: `reset(seed)`
draws robosuite's random placement (and its small joint noise) from `seed` alone.

robosuite 1.4's Sawyer meshes do not compile under MuJoCo 3.3 ("mesh volume is too small"): while
this module builds an environment, a mesh that fails that way is given `inertia="shell"` (it only
affects the inertia MuJoCo derives for the visual mesh's body; robosuite sets the links' inertias
explicitly).
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass

os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")

import numpy as np  # noqa: E402

from sof_ros.config import SimConfig  # noqa: E402
from sof_ros.errors import SofError  # noqa: E402
from sof_ros.sim.libero_env import CONTROL_RATE_HZ, ENV_STEPS_PER_CONTROL, METRES_PER_ACTION_UNIT, LiberoArm  # noqa: E402,F401
from sof_ros.sim.mujoco_camera import open_camera, visual_geoms_option  # noqa: E402

CAMERA = "sof_front"
OSC_KP = 300  # robosuite's OSC_POSE stiffness (default 150: the Sawyer's hand then lags its target by
# several cm low over the table, and the expert's grasps miss)
SETTLE_ENV_STEPS = 5  # as LiberoArm: the scene settles before the first frame


@dataclass(frozen=True)
class Task:
    env: str  # robosuite environment name
    instruction: str
    objects: tuple[str, ...]  # robosuite attribute names of the task's objects (masks, experts)
    scene: str  # which camera (SCENE_CAMERAS)
    success: str = ""  # a check of this module (_SUCCESS) instead of the environment's own


def _green_on_red(env) -> bool:
    """Stack's own test with the cubes' roles swapped: the green cube lifted, touching the red one,
    not held."""
    green = env.sim.data.body_xpos[env.cubeB_body_id]
    lifted = green[2] > env.table_offset[2] + 0.04
    held = env._check_grasp(gripper=env.robots[0].gripper, object_geoms=env.cubeB)
    return bool(lifted and not held and env.check_contact(env.cubeB, env.cubeA))


_SUCCESS = {"green_on_red": _green_on_red}


TASKS: dict[str, Task] = {
    "Lift": Task("Lift", "lift the red cube", ("cube",), "table"),
    "Stack": Task("Stack", "stack the red cube on the green cube", ("cubeA", "cubeB"), "table"),
    # the same scene as Stack, the other instruction: only the words say which cube goes where
    "StackGreenOnRed": Task("Stack", "stack the green cube on the red cube", ("cubeB", "cubeA"), "table",
                            "green_on_red"),
}
# Tried and left out: PickPlaceCan -- its goal quadrant (0.92 m from the base) is at the edge of the
# Panda's reach with the hand held pointing down, and the expert did not finish it.

# robot (lower case, as the ROS robot profiles) -> robosuite robot, base body (the ROS base frame), gripper.
# The Sawyer carries a Robotiq 2F-85 (a common lab setup): its own Rethink gripper opens 4.6 cm, less
# than the can (5 cm) or a cube turned by more than ~10 degrees, and the 4-D action cannot turn the hand.
ROBOTS: dict[str, tuple[str, str, str]] = {
    "panda": ("Panda", "robot0_link0", "default"),  # panda_link0, as LiberoArm; the Franka hand
    "sawyer": ("Sawyer", "robot0_base", "Robotiq85Gripper"),
    "iiwa": ("IIWA", "robot0_base", "default"),
    "jaco": ("Jaco", "robot0_base", "default"),
    "kinova3": ("Kinova3", "robot0_base", "default"),
    "ur5e": ("UR5e", "robot0_base", "default"),
}
# Gripper orientation every arm holds, in its base frame: pointing down, fingers closing along base y
# (the grip site's axes for robosuite's grippers; the Panda's pose at LIBERO's start).
HAND_DOWN = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
ACTION_FRAME = {"panda": "panda_link0", "sawyer": "base"}  # frame of ee_pos and of the [dx, dy, dz] action

# One camera per scene, fixed in the world, the same for every arm: (position, point looked at, fovy).
SCENE_CAMERAS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float], float]] = {
    "table": ((0.50, 0.36, 1.42), (-0.12, 0.03, 0.90), 48.0),
}


def robot_name(sim_cfg) -> str:
    robot = (getattr(sim_cfg, "robot", "") or "panda").lower()
    if robot not in ROBOTS:
        raise SofError(f"unknown robosuite robot '{robot}'; choose one of: {', '.join(ROBOTS)}")
    return robot


def instruction_for(task: str) -> str:
    return _task(task).instruction


def _task(task: str) -> Task:
    if task not in TASKS:
        raise SofError(f"unknown robosuite task '{task}'; choose one of: {', '.join(TASKS)}")
    return TASKS[task]


def _look_at_quat(pos, target) -> np.ndarray:
    """MuJoCo camera quaternion (w, x, y, z) looking from `pos` at `target`, image up ~ world +z."""
    import mujoco

    fwd = np.asarray(target, float) - np.asarray(pos, float)
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    mat = np.stack([right, up, -fwd], 1)  # camera axes x right, y up, z backward (MuJoCo)
    q = np.zeros(4)
    mujoco.mju_mat2Quat(q, mat.reshape(-1))
    return q


@contextlib.contextmanager
def _compile_patch(scene: str):
    """While robosuite builds a scene: add the `sof_front` camera and give meshes that MuJoCo 3.3
    rejects as too thin a shell inertia (robosuite 1.4's Sawyer head)."""
    from robosuite.utils.binding_utils import MjSim

    original = MjSim.__dict__["from_xml_string"]
    pos, target, fovy = SCENE_CAMERAS[scene]
    quat = _look_at_quat(pos, target)
    camera = (f'<camera mode="fixed" name="{CAMERA}" pos="{pos[0]} {pos[1]} {pos[2]}" '
              f'quat="{quat[0]:.6f} {quat[1]:.6f} {quat[2]:.6f} {quat[3]:.6f}" fovy="{fovy}"/>')

    def from_xml_string(cls, xml):
        if f'name="{CAMERA}"' not in xml:
            xml = xml.replace("<worldbody>", "<worldbody>" + camera, 1)
        for _ in range(64):
            try:
                return original.__func__(cls, xml)
            except ValueError as exc:
                m = re.search(r"mesh volume is too small: (\S+)", str(exc))
                if not m:
                    raise
                xml, n = re.subn(r'(<mesh[^>]*name="%s")' % re.escape(m.group(1)), r'\1 inertia="shell"', xml)
                if not n:
                    raise
        raise SofError("robosuite scene did not compile (too many thin meshes)")

    MjSim.from_xml_string = classmethod(from_xml_string)
    try:
        yield
    finally:
        MjSim.from_xml_string = original


@contextlib.contextmanager
def _seeded(seed: int):
    """robosuite 1.4 draws placements and joint noise from NumPy's global generator: seed it for
    the reset and give the caller's state back afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


class RobosuiteArm(LiberoArm):
    """One robosuite task with one arm (`sim.robot`) and the scene's fixed camera; `reset(seed)`."""

    def __init__(self, task: str, cfg: SimConfig | None = None, camera: str | None = None,
                 with_depth: bool = True):
        import mujoco

        logging.getLogger("robosuite_logs").setLevel(logging.ERROR)
        import robosuite
        from robosuite.controllers import load_controller_config

        self.cfg = cfg or SimConfig(backend="robosuite", camera=CAMERA)
        spec = _task(task)
        self.robot = robot_name(self.cfg)
        self.task, self.instruction, self.suite, self.task_index = task, spec.instruction, "robosuite", 0
        rs_robot, base_body, gripper_type = ROBOTS[self.robot]
        # seeded: robosuite draws the scene's objects (Lift's cube size) from NumPy's global generator when
        # it builds the model, so two arms (or two runs) would otherwise get cubes of different sizes
        with _compile_patch(spec.scene), _seeded(0):
            controller = load_controller_config(default_controller="OSC_POSE")
            controller["kp"] = OSC_KP
            self.env = robosuite.make(spec.env, robots=rs_robot, gripper_types=gripper_type,
                                      controller_configs=controller,
                                      has_renderer=False, has_offscreen_renderer=False, use_camera_obs=False,
                                      ignore_done=True, hard_reset=False, horizon=10**9, control_freq=20)
        self._raw = self.env
        self.model = self.env.sim.model._model
        self.data = self.env.sim.data._data
        self.camera = camera or self.cfg.camera
        if self.camera in ("corner", "corner2", "corner3", "agentview_sof", ""):
            self.camera = CAMERA
        self.cam_id, self.renderer = open_camera(self.model, self.camera, "robosuite", self.cfg.height,
                                                 self.cfg.width)
        self._scene_opt = visual_geoms_option()
        self._mujoco = mujoco
        self.with_depth = bool(with_depth)
        self.with_rgb = True
        self._base_body = self.model.body(base_body).id
        by_name = {o.name: o for o in getattr(self.env, "objects", [])}  # PickPlace keeps its objects in a list
        self._objects = {name: (by_name[name] if name in by_name else getattr(self.env, name)).root_body
                         for name in spec.objects}
        ids = {self.model.body(b).id for b in self._objects.values()}
        self._object_geoms = np.flatnonzero(np.isin(self.model.geom_bodyid, list(ids)))
        robot_bodies = [b for b in range(self.model.nbody) if self.model.body(b).name.startswith("gripper0_")]
        self._robot_geoms = np.flatnonzero(np.isin(self.model.geom_bodyid, robot_bodies))
        self._check = _SUCCESS[spec.success] if spec.success else None
        self._finger_qpos = self.env.robots[0]._ref_gripper_joint_pos_indexes
        self._open_q, self._closed_q = self._calibrate_gripper()  # sets its own target and orientation
        self._target = np.zeros(3)
        self._ref_rot = np.eye(3)
        self._success = False
        self.steps = 0

    # --- episode ----------------------------------------------------------------------------------
    def reset(self, seed: int):
        seed = int(seed)
        if seed < 0:
            raise SofError(f"seed must be >= 0, got {seed}")
        with _seeded(seed):
            self.env.reset()
        self._success = False
        self.steps = 0
        self._grip = -1.0
        self._target = self._hand_world().copy()
        self._ref_rot = self.base_pose()[:3, :3] @ HAND_DOWN
        for _ in range(SETTLE_ENV_STEPS):
            self._env_step(-1.0, hold=True)
        self._target = self._hand_world().copy()
        self._success = False
        return self.observe()

    def _env_step(self, grip: float, hold: bool = False) -> bool:
        """One robosuite step (its controller at every physics substep) without robosuite's
        observables, which nothing here reads; returns the task's success."""
        action = np.zeros(7) if hold else self._osc_action(grip)
        if hold:
            action[6] = grip
        env, sim = self.env, self.env.sim
        policy_step = True
        for _ in range(int(round(env.control_timestep / env.model_timestep))):
            sim.forward()
            env._pre_action(action, policy_step)
            sim.step()
            policy_step = False
        env.cur_time += env.control_timestep
        env.timestep += 1
        return bool(self._check(env) if self._check else env._check_success())

    def _calibrate_gripper(self) -> tuple[np.ndarray, np.ndarray]:
        """Finger joint positions fully open and fully closed on nothing, measured once: grippers
        differ in which way their joints run and how far (the Sawyer's closes towards its joints'
        upper limits, the Panda's towards zero)."""
        with _seeded(0):
            self.env.reset()
        self._target = self._hand_world().copy()
        self._ref_rot = self.base_pose()[:3, :3] @ HAND_DOWN
        out = []
        for grip in (-1.0, 1.0):
            for _ in range(15):
                self._env_step(grip, hold=True)
            out.append(np.array(self.data.qpos[self._finger_qpos], dtype=np.float64))
        return out[0], out[1]

    def gripper(self) -> float:
        """Finger opening 0 (closed) .. 1 (open), from the finger joints' travel (any gripper model)."""
        q = self.data.qpos[self._finger_qpos]
        travel = self._open_q - self._closed_q
        moves = np.abs(travel) > 1e-4  # multi-joint grippers (Robotiq) have passive joints too
        frac = (q[moves] - self._closed_q[moves]) / travel[moves]
        return float(np.clip(frac.mean(), 0.0, 1.0))

    def state(self):
        s = super().state()
        s.robot = self.robot
        return s


# --- scripted experts ---------------------------------------------------------------------------------
# The LIBERO programs' primitives (grasp from above, carry, place, on privileged poses, in the base
# frame) with the same 4-D action; heights are in the robot's base frame, where the table top is at
# z = -0.112 for every arm here (robosuite mounts each arm's base 0.912 m up, the table at 0.8 m).
TABLE_Z = -0.112


def _programs() -> dict:
    from sof_ros.sim.libero_experts import object_center_top, pick, pick_place

    return {
        "Lift": lambda: [pick("cube", lift=TABLE_Z + 0.16)],
        "Stack": lambda: pick_place("cubeA", object_center_top("cubeB"), lift=TABLE_Z + 0.14, drop=0.005),
        "StackGreenOnRed": lambda: pick_place("cubeB", object_center_top("cubeA"), lift=TABLE_Z + 0.15, drop=0.005),
    }


PROGRAMS = _programs()


def expert_for(task: str):
    """The scripted expert of `task` (any arm): `reset()` and `get_action(state)`."""
    from sof_ros.sim.libero_experts import LiberoExpert

    _task(task)

    class RobosuiteExpert(LiberoExpert):
        def reset(self) -> None:
            self.queue = list(PROGRAMS[self.task]())
            self.current, self.t, self.grip = None, 0, -1.0

    expert = RobosuiteExpert.__new__(RobosuiteExpert)
    expert.task = task
    expert.reset()
    return expert
