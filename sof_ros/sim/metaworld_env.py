"""MetaWorld (Sawyer) as a camera-equipped arm: RGB, metric depth, segmentation, camera model,
end-effector pose and success, rendered headless on CPU.

Camera conventions (same as RealSense / OpenCV, so real and simulated cameras share code):
intrinsics K is 3x3 in pixels, pixel (u, v) = column, row of the *upright* image; the camera pose
is camera-to-world with x right, y down, z forward. MetaWorld's `corner` camera is mounted
upside down, so images are rotated 180 degrees and the pose is rotated with them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")

import numpy as np  # noqa: E402

from sof_ros.config import BENCHMARK_TASKS, SimConfig  # noqa: E402
from sof_ros.errors import SofError  # noqa: E402
from sof_ros.sim.mujoco_camera import (  # noqa: E402
    camera_pose_world, camera_upside_down, close_renderer, open_camera, pinhole_intrinsics)


@dataclass
class Observation:
    rgb: np.ndarray  # (H, W, 3) uint8, upright
    depth: np.ndarray  # (H, W) float32 metres along the optical axis
    seg: np.ndarray  # (H, W) int32 MuJoCo geom id, -1 where no geom (background)
    intrinsics: np.ndarray  # (3, 3)
    cam_pose: np.ndarray  # (4, 4) camera-to-world, OpenCV axes
    ee_pos: np.ndarray  # (3,) tool centre point in world metres
    gripper: float  # finger opening, MetaWorld's normalised obs[3]
    body_pos: np.ndarray  # (nbody, 3) for ground-truth flow
    body_mat: np.ndarray  # (nbody, 3, 3)
    success: bool
    state: np.ndarray  # MetaWorld's full state vector (what the scripted expert reads)
    object_mask: np.ndarray | None = None  # (H, W) bool: segmentation of the task's objects (TASK_OBJECTS)
    robot_mask: np.ndarray | None = None  # (H, W) bool: segmentation of the arm's hand and fingers
    oracle: object = None  # privileged: the arm itself, for the expert's future (ExpertFuture); oracle rows only

    def agent_input(self):
        """What a policy gets: what a real camera + arm would report, plus the privileged state
        that only the scripted expert row reads."""
        from sof_ros.policies import AgentInput

        return AgentInput(rgb=self.rgb, depth=self.depth, seg=self.seg, intrinsics=self.intrinsics,
                          cam_pose=self.cam_pose, ee_pos=self.ee_pos, gripper=self.gripper, sim_state=self.state,
                          object_mask=self.object_mask, robot_mask=self.robot_mask, oracle=self.oracle)


# The objects each instruction is about, by MuJoCo geom or body name (AVDC's name2maskid, for the
# v3 scenes): in simulation the learning-free Flow2Action's object mask is their segmentation.
TASK_OBJECTS: dict[str, tuple[str, ...]] = {
    "door-open": ("geom:handle",), "door-close": ("body:door_link",), "basketball": ("body:basketball",),
    "shelf-place": ("body:obj",), "button-press": ("body:button",), "button-press-topdown": ("body:button",),
    "faucet-close": ("body:faucet_link2",), "faucet-open": ("body:faucet_link2",),
    "handle-press": ("body:handle_link",), "hammer": ("geom:HammerHandle",), "assembly": ("geom:WrenchHandle",),
}
ROBOT_HAND_BODIES = ("hand", "rightpad", "leftpad", "right_hand")  # rigid with the tool centre point (but the fingers)


@dataclass
class ExpertFuture:
    """The scripted expert's next `steps` control steps from a state, rendered every `every` steps:
    (n, ...) stacks of depth, seg and body/camera poses (for ground-truth flow), and whether the
    expert succeeded within them."""

    depth: np.ndarray
    seg: np.ndarray
    cam_pose: np.ndarray
    body_pos: np.ndarray
    body_mat: np.ndarray
    ee_pos: np.ndarray
    success: bool


def metaworld_env_name(task: str) -> str:
    return task if task.endswith("-v3") else f"{task}-v3"


def instruction_for(task: str) -> str:
    base = task[:-3] if task.endswith("-v3") else task
    return BENCHMARK_TASKS.get(base, base.replace("-", " "))


def available_tasks() -> list[str]:
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    return sorted(name[:-3] for name in ALL_V3_ENVIRONMENTS)


class MetaWorldArm:
    """One MetaWorld task with a fixed camera; `reset(seed)` draws object positions from the seed."""

    def __init__(self, task: str, cfg: SimConfig | None = None, camera: str | None = None,
                 with_depth: bool = True):
        import mujoco
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        self.cfg = cfg or SimConfig()
        self.task = task[:-3] if task.endswith("-v3") else task
        name = metaworld_env_name(task)
        if name not in ALL_V3_ENVIRONMENTS:
            raise SofError(
                f"unknown MetaWorld task '{task}'; choose one of: {', '.join(available_tasks())}"
            )
        self.instruction = instruction_for(self.task)
        env = ALL_V3_ENVIRONMENTS[name]()
        env._partially_observable = False  # the scripted experts read the goal
        if "sawyer_observation_space" in env.__dict__:  # cached while the goal was hidden: its
            del env.sawyer_observation_space  # bounds would clip the goal to zero in step()
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True
        env._set_task_called = True
        env.max_path_length = 10**9  # episode length is ours to decide (cfg.max_steps)
        self.env = env
        self.model, self.data = env.model, env.data
        self.camera = camera or self.cfg.camera
        # antialias off: no multisampling, ~3x faster 128x128 frames on CPU
        self.cam_id, self.renderer = open_camera(self.model, self.camera, "MetaWorld", self.cfg.height,
                                                 self.cfg.width, multisample=getattr(self.cfg, "antialias", True))
        if not self.cfg.render_shadows:
            for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                         mujoco.mjtRndFlag.mjRND_SKYBOX):
                self.renderer.scene.flags[flag] = False
        self._mujoco = mujoco
        self._state = None
        self._success = False
        self.steps = 0
        self.with_depth = bool(with_depth)  # False: observations carry RGB only (depth and seg None), 1/3 of the rendering

    # --- camera model -------------------------------------------------------------------
    def intrinsics(self) -> np.ndarray:
        return pinhole_intrinsics(self.model, self.cam_id, self.cfg.height, self.cfg.width)

    def _upside_down(self) -> bool:
        return camera_upside_down(self.data, self.cam_id)

    def cam_pose(self) -> np.ndarray:
        return camera_pose_world(self.data, self.cam_id)

    # --- episode ------------------------------------------------------------------------
    def reset(self, seed: int) -> Observation:
        self.env.seed(int(seed))
        state, _ = self.env.reset()
        self._state = state
        self._success = False
        self.steps = 0
        return self.observe()

    def step(self, action: np.ndarray) -> Observation:
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (4,) or not np.all(np.isfinite(action)):
            raise SofError(f"MetaWorld action must be 4 finite numbers (dx, dy, dz, grip), got {action}")
        state, _, _, _, info = self.env.step(np.clip(action, -1, 1).astype(np.float32))
        self._state = state
        self._success = self._success or bool(info.get("success", 0.0))
        self.steps += 1
        return self.observe()

    @property
    def success(self) -> bool:
        return self._success

    def render(self, rgb: bool = True) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        """(rgb, depth, seg) of the current state; rgb=False skips the colour pass (rgb is None)."""
        r = self.renderer
        r.update_scene(self.data, camera=self.cam_id)
        rgb = r.render().copy() if rgb or not self.with_depth else None
        if not self.with_depth:
            return (rgb[::-1, ::-1].copy() if self._upside_down() else rgb), None, None
        r.enable_depth_rendering()
        depth = r.render().astype(np.float32).copy()
        r.disable_depth_rendering()
        r.enable_segmentation_rendering()
        seg_raw = r.render().copy()
        r.disable_segmentation_rendering()
        seg = np.where(seg_raw[..., 1] == int(self._mujoco.mjtObj.mjOBJ_GEOM), seg_raw[..., 0], -1)
        seg = seg.astype(np.int32)
        if self._upside_down():
            depth, seg = depth[::-1, ::-1].copy(), seg[::-1, ::-1].copy()
            rgb = None if rgb is None else rgb[::-1, ::-1].copy()
        return rgb, depth, seg

    def render_rgb(self) -> np.ndarray:
        self.renderer.update_scene(self.data, camera=self.cam_id)
        rgb = self.renderer.render()
        return rgb[::-1, ::-1].copy() if self._upside_down() else rgb.copy()

    def observe(self) -> Observation:
        rgb, depth, seg = self.render()
        object_mask, robot_mask = self._masks(seg)
        return Observation(
            object_mask=object_mask, robot_mask=robot_mask, oracle=self,
            rgb=rgb, depth=depth, seg=seg, intrinsics=self.intrinsics(), cam_pose=self.cam_pose(),
            ee_pos=np.array(self.env.tcp_center, dtype=np.float64),
            gripper=float(self._state[3]) if self._state is not None else 0.0,
            body_pos=self.data.xpos.copy(), body_mat=self.data.xmat.reshape(-1, 3, 3).copy(),
            success=self._success,
            state=np.array(self._state, dtype=np.float64) if self._state is not None else np.zeros(39),
        )

    def geom_body_ids(self) -> np.ndarray:
        return self.model.geom_bodyid.astype(np.int32).copy()

    def geom_ids(self, names) -> np.ndarray:
        """Geom ids of "geom:<name>" / "body:<name>" entries (every geom of the body)."""
        m, mj, ids = self.model, self._mujoco, []
        for entry in names:
            kind, _, name = entry.partition(":")
            if kind == "geom":
                gid = mj.mj_name2id(m, mj.mjtObj.mjOBJ_GEOM, name)
                ids += [gid] if gid >= 0 else []
            else:
                bid = mj.mj_name2id(m, mj.mjtObj.mjOBJ_BODY, name)
                ids += np.flatnonzero(m.geom_bodyid == bid).tolist() if bid >= 0 else []
        if not ids:
            raise SofError(f"none of {list(names)} is in the '{self.task}' scene")
        return np.array(sorted(set(ids)), np.int32)

    @property
    def has_object_mask(self) -> bool:
        """Whether observations carry an object mask: the task names its objects (TASK_OBJECTS)."""
        return self.task in TASK_OBJECTS

    def _masks(self, seg: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        if not hasattr(self, "_object_ids"):
            names = TASK_OBJECTS.get(self.task)
            self._object_ids = self.geom_ids(names) if names else None
            self._robot_ids = self.geom_ids([f"body:{b}" for b in ROBOT_HAND_BODIES])
        obj = np.isin(seg, self._object_ids) if self._object_ids is not None else None
        return obj, np.isin(seg, self._robot_ids)

    def expert_future(self, steps: int, every: int = 1) -> ExpertFuture:
        """Privileged (oracle rows only): run the scripted expert `steps` control steps on from the
        current state, render depth + segmentation every `every` steps, then restore the simulator
        exactly (MuJoCo integration state and the env's own attributes), so the episode goes on as
        if nothing had happened."""
        mj, env = self._mujoco, self.env
        if steps < 1 or every < 1:
            raise SofError(f"expert_future needs steps >= 1 and every >= 1, got {steps}, {every}")
        spec = mj.mjtState.mjSTATE_INTEGRATION
        state = np.empty(mj.mj_stateSize(self.model, spec))
        mj.mj_getState(self.model, self.data, state, spec)
        saved = {k: (v, v.copy() if isinstance(v, np.ndarray) else None) for k, v in env.__dict__.items()}
        expert = expert_policy(self.task)
        obs, success = self._state, False
        out: dict[str, list] = {k: [] for k in ("depth", "seg", "cam_pose", "body_pos", "body_mat", "ee_pos")}
        try:
            for i in range(1, steps + 1):
                a = np.clip(np.asarray(expert.get_action(obs), dtype=np.float64), -1, 1)
                obs, _, _, _, info = env.step(a.astype(np.float32))
                success = success or bool(info.get("success", 0.0))
                if i % every == 0:
                    _, depth, seg = self.render(rgb=False)  # ground-truth flow needs no colour
                    out["depth"].append(depth)
                    out["seg"].append(seg)
                    out["cam_pose"].append(self.cam_pose())
                    out["body_pos"].append(self.data.xpos.copy())
                    out["body_mat"].append(self.data.xmat.reshape(-1, 3, 3).copy())
                    out["ee_pos"].append(np.array(env.tcp_center, dtype=np.float64))
        finally:
            for k in [k for k in env.__dict__ if k not in saved]:
                del env.__dict__[k]
            for k, (obj, copy) in saved.items():
                if copy is not None:
                    obj[...] = copy  # in place: some attributes are views into the MuJoCo data
                env.__dict__[k] = obj
            mj.mj_setState(self.model, self.data, state, spec)
            mj.mj_forward(self.model, self.data)
        return ExpertFuture(**{k: np.stack(v) for k, v in out.items()}, success=success)

    def close(self) -> None:
        """Free GL resources with *this* renderer's context current: MuJoCo's own close frees
        whatever context is current, which silently corrupts another live arm's renderer."""
        renderer = getattr(self, "renderer", None)
        if renderer is None:
            return
        close_renderer(renderer)
        self.renderer = None
        self.env.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: GL may already be gone
            pass


def expert_policy(task: str):
    """MetaWorld's scripted expert for a task (reads the privileged state vector)."""
    import importlib

    base = task[:-3] if task.endswith("-v3") else task
    cls_name = "Sawyer" + "".join(p.capitalize() for p in base.split("-")) + "V3Policy"
    module = importlib.import_module("metaworld.policies")
    policy_cls = getattr(module, cls_name, None)
    if policy_cls is None:
        raise SofError(f"MetaWorld has no scripted expert '{cls_name}' for task '{task}'")
    return policy_cls()
