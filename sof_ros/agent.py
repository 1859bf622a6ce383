"""The SOF agent at run time: plan (image + instruction -> skill tokens -> flow plan) and act
(flow plan + current observation -> end-effector action). Used by `sof-eval` in process and
by the ROS nodes; it never imports rclpy.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from sof_ros.config import SofConfig, from_dict
from sof_ros.errors import SofError
from sof_ros.learn.data import resize_rgb
from sof_ros.nn import tensor_to_image
from sof_ros.text import InstructionEncoder

# learned / learning_free are SOF; the others are the comparisons evaluated beside it.
FLOW2ACTION_MODES = ("learned", "learning_free", "skill2action", "bc", "pixel_skills")


@dataclass
class AgentInput:
    """What a node knows at one control step."""

    rgb: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray | None = None  # (H, W) float32 metres
    seg: np.ndarray | None = None
    intrinsics: np.ndarray | None = None  # 3x3
    cam_pose: np.ndarray | None = None  # 4x4 camera-to-world, OpenCV axes
    ee_pos: np.ndarray | None = None  # (3,) metres, world/base frame
    gripper: float = 0.0  # finger opening as the training data recorded it


@dataclass
class FlowPlan:
    tokens: np.ndarray  # (n_tokens,) int64 skill-token ids
    flow: np.ndarray  # (T_plan, h, w, 2) float32 per-step flow in working-resolution pixels
    image_size: tuple[int, int]  # (W, H) of the frame the plan was made from
    actions: np.ndarray | None = field(default=None, repr=False)  # (T_plan, 4) when the head predicts a chunk
    frames: np.ndarray | None = field(default=None, repr=False)  # (T_plan, h, w, 3) uint8, pixel-space skills only


def _check_rgb(rgb) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise SofError(f"the frame must be an (H, W, 3) uint8 RGB image, got {rgb.shape} {rgb.dtype}")
    return rgb


class SofAgent:
    def __init__(self, cfg: SofConfig, models: dict[str, torch.nn.Module], instructions: dict[str, np.ndarray],
                 device: str = "cpu", flow2action: str = "learned", replan_every: int | None = None):
        if flow2action not in FLOW2ACTION_MODES:
            raise SofError(f"unknown flow2action mode '{flow2action}'; choose one of {FLOW2ACTION_MODES}")
        self.cfg = cfg
        self.models = models
        self.device = device
        self.mode = flow2action
        self.replan_every = int(replan_every or cfg.eval.replan_every)
        self.text = InstructionEncoder(instructions)
        self.geometric = None
        if flow2action == "learning_free":
            from sof_ros.flow2action.geometric import GeometricFlow2Action

            self.geometric = GeometricFlow2Action()

    @classmethod
    def load(cls, path, device: str = "cpu", flow2action: str = "learned", replan_every: int | None = None) -> "SofAgent":
        from sof_ros.train import build_models, load_weights

        path = Path(path)
        cfg_path = path / "config.yaml"
        if not cfg_path.is_file():
            raise SofError(f"{path} is not a sof_ros checkpoint (no config.yaml); train one with "
                           "`sof-train` or use the shipped models/sof_metaworld")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise SofError("--device cuda requested but no CUDA device is available; use --device cpu")
        cfg = from_dict(yaml.safe_load(cfg_path.read_text()))
        models = build_models(cfg)
        needed = {"learned": ("skill", "policy", "f2a"), "learning_free": ("skill", "policy"),
                  "skill2action": ("skill", "policy", "skill2action"), "bc": ("bc",),
                  "pixel_skills": ("pixel_skill", "pixel_policy", "pixel2action")}[flow2action]
        for name in needed:
            load_weights(models[name], path / f"{name}.pt", device)
        instr_path = path / "instructions.pt"
        instructions = {}
        if instr_path.is_file():
            instructions = {k: v.numpy() for k, v in torch.load(instr_path, weights_only=True).items()}
        return cls(cfg, models, instructions, device, flow2action, replan_every)

    # --- tensors -------------------------------------------------------------------------
    def _image(self, rgb: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(resize_rgb(_check_rgb(rgb), self.cfg.skill.image_res)[None]).to(self.device)

    def _proprio(self, obs: AgentInput) -> torch.Tensor:
        if obs.ee_pos is None:
            if self.cfg.f2a.use_proprio and self.mode != "learning_free":
                raise SofError("this checkpoint's action head needs the end-effector position (ee_pos)")
            ee = np.zeros(3)
        else:
            ee = np.asarray(obs.ee_pos, dtype=np.float32).reshape(-1)
            if ee.shape != (3,) or not np.all(np.isfinite(ee)):
                raise SofError(f"ee_pos must be 3 finite numbers in metres, got {obs.ee_pos}")
        return torch.tensor([[*ee, float(obs.gripper)]], dtype=torch.float32, device=self.device)

    # --- API -----------------------------------------------------------------------------
    @torch.no_grad()
    def plan(self, obs: AgentInput, instruction: str) -> FlowPlan:
        rgb = _check_rgb(obs.rgb)
        size = (rgb.shape[1], rgb.shape[0])
        img = self._image(rgb)
        text = torch.from_numpy(self.text(instruction)[None]).to(self.device)
        if self.mode == "bc":
            actions = self.models["bc"](text, img, self._proprio(obs))[0].cpu().numpy()
            r = self.cfg.skill.flow_res
            return FlowPlan(np.zeros(0, np.int64), np.zeros((0, r, r, 2), np.float32), size, actions)
        if self.mode == "pixel_skills":  # ablation: tokens of future frames, inverse dynamics on them
            tokens = self.models["pixel_policy"].generate(img, text)
            pixel_skill = self.models["pixel_skill"]
            change = pixel_skill.decode_ids(tokens, img)
            actions = self.models["pixel2action"](change, img, self._proprio(obs))[0].cpu().numpy()
            r = self.cfg.skill.flow_res
            frames = pixel_skill.future_frames(change, img)[0]
            return FlowPlan(tokens[0].cpu().numpy().astype(np.int64), np.zeros((0, r, r, 2), np.float32), size,
                            actions, tensor_to_image(frames).cpu().numpy())
        tokens = self.models["policy"].generate(img, text)
        flow = self.models["skill"].decode_ids(tokens, img)
        actions = None
        if self.mode == "learned":
            actions = self.models["f2a"](flow, img, self._proprio(obs))[0].cpu().numpy()
        elif self.mode == "skill2action":
            actions = self.models["skill2action"](tokens, img, self._proprio(obs))[0].cpu().numpy()
        return FlowPlan(tokens[0].cpu().numpy().astype(np.int64), flow[0].cpu().numpy(), size, actions)

    def reset(self) -> None:
        """Start of an episode or a new instruction: forget state carried between plans."""
        if self.geometric is not None:
            self.geometric.reset()

    def act(self, plan: FlowPlan, obs: AgentInput, step_in_plan: int) -> np.ndarray:
        if plan.actions is not None:
            j = min(max(int(step_in_plan), 0), len(plan.actions) - 1)
            return np.clip(plan.actions[j], -1.0, 1.0).astype(np.float64)
        if obs.depth is None or obs.intrinsics is None or obs.cam_pose is None or obs.ee_pos is None:
            raise SofError("the learning-free Flow2Action needs depth, camera intrinsics, camera pose and "
                           "the end-effector position; use a depth camera or --flow2action learned")
        return self.geometric.act(plan.flow, obs.depth, obs.intrinsics, obs.cam_pose, obs.ee_pos,
                                  step_in_plan=step_in_plan, seg=obs.seg)


def agent_input(obs) -> AgentInput:
    """From a simulator Observation (sof_ros.sim.metaworld_env) to what a real node would know."""
    return AgentInput(rgb=obs.rgb, depth=obs.depth, seg=obs.seg, intrinsics=obs.intrinsics,
                      cam_pose=obs.cam_pose, ee_pos=obs.ee_pos, gripper=obs.gripper)
