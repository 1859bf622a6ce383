"""The rows loaded from a `sof-train` checkpoint: SOF (learned and learning-free Flow2Action) and
the comparisons trained on the same data (Skill2Action, behaviour cloning, pixel-space skills)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sof_ros.errors import SofError
from sof_ros.learn.data import resize_rgb
from sof_ros.nn import tensor_to_image
from sof_ros.policies.base import AgentInput, FlowPlan, row_spec
from sof_ros.text import InstructionEncoder


def _check_rgb(rgb) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise SofError(f"the frame must be an (H, W, 3) uint8 RGB image, got {rgb.shape} {rgb.dtype}")
    return rgb


class CheckpointPolicy:
    """Shared by every trained row: the checkpoint's config, its networks, instruction embeddings,
    and the tensors a plan is made from. Subclasses implement `plan`; `act` reads the action chunk
    the plan predicted."""

    name = ""
    needs_proprio = True  # the action head reads end-effector position + gripper

    def __init__(self, cfg, models: dict[str, torch.nn.Module], instructions: dict[str, np.ndarray],
                 device: str = "cpu", replan_every: int | None = None):
        self.cfg = cfg
        self.models = models
        self.device = device
        self.replan_every = int(replan_every or cfg.eval.replan_every)
        self.text = InstructionEncoder(instructions)
        self.ensemble = float(getattr(cfg.eval, "ensemble", 0.0))
        self._chunks: list[tuple[int, np.ndarray]] = []  # (step planned at, actions) for temporal ensembling
        self._step = 0

    @classmethod
    def load(cls, checkpoint, device: str = "cpu", replan_every: int | None = None, task: str | None = None):
        from sof_ros.config import load_checkpoint_config
        from sof_ros.train import build_models, load_weights

        if checkpoint is None:
            raise SofError(f"row '{cls.name}' needs a checkpoint directory (sof-train writes one; "
                           "the shipped one is models/sof_metaworld)")
        path = Path(checkpoint)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise SofError("--device cuda requested but no CUDA device is available; use --device cpu")
        cfg = load_checkpoint_config(path)
        models = build_models(cfg)
        for stage in row_spec(cls.name).stages:
            load_weights(models[stage], path / f"{stage}.pt", device)
        instr_path = path / "instructions.pt"
        instructions = {}
        if instr_path.is_file():
            instructions = {k: v.numpy() for k, v in torch.load(instr_path, weights_only=True).items()}
        return cls(cfg, models, instructions, device, replan_every)

    # --- instructions (for the ROS policy node) -----------------------------------------
    @property
    def instructions(self) -> list[str]:
        """The instructions this checkpoint has embeddings for: the ones it was trained on."""
        return sorted(self.text.cache)

    def knows_instruction(self, instruction: str) -> bool:
        return self.text.knows(instruction)

    def load_text_encoder(self) -> None:
        """Load the language model now (seconds), so an unknown instruction is embedded in milliseconds later."""
        from sof_ros.text import load_model

        load_model()

    def prepare_instruction(self, instruction: str) -> None:
        """Embed (and cache) the instruction now, before the frame its first plan is made on."""
        self.text(instruction)

    @property
    def frame_size(self) -> tuple[int, int]:
        """(W, H) of the frames this checkpoint was trained on (its simulator camera): the ROS nodes
        refuse frames of another size (the camera node's working size makes them this size)."""
        return int(self.cfg.sim.width), int(self.cfg.sim.height)

    # --- tensors -------------------------------------------------------------------------
    def _inputs(self, obs: AgentInput, instruction: str) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """(image at the working resolution, instruction embedding, (W, H) of the frame)."""
        rgb = _check_rgb(obs.rgb)
        img = torch.from_numpy(resize_rgb(rgb, self.cfg.skill.image_res)[None]).to(self.device)
        text = torch.from_numpy(self.text(instruction)[None]).to(self.device)
        return img, text, (rgb.shape[1], rgb.shape[0])

    def _sampling(self) -> dict:
        """Stage 2's run-time decoding (policy.temperature, policy.top_k), for every token policy."""
        p = self.cfg.policy
        return {"temperature": float(p.temperature), "top_k": int(p.top_k)}

    def _policy_proprio(self, obs: AgentInput) -> torch.Tensor | None:
        """What Stage 2 reads besides frame and instruction: proprioception when policy.use_proprio."""
        return self._proprio(obs) if self.cfg.policy.use_proprio else None

    def _proprio(self, obs: AgentInput) -> torch.Tensor:
        if obs.ee_pos is None:
            if self.cfg.f2a.use_proprio and self.needs_proprio:
                raise SofError("this checkpoint's action head needs the end-effector position (ee_pos)")
            ee = np.zeros(3)
        else:
            ee = np.asarray(obs.ee_pos, dtype=np.float32).reshape(-1)
            if ee.shape != (3,) or not np.all(np.isfinite(ee)):
                raise SofError(f"ee_pos must be 3 finite numbers in metres, got {obs.ee_pos}")
        return torch.tensor([[*ee, float(obs.gripper)]], dtype=torch.float32, device=self.device)

    def _no_flow(self) -> np.ndarray:
        r = self.cfg.skill.flow_res
        return np.zeros((0, r, r, 2), np.float32)

    @staticmethod
    def _np(x: torch.Tensor) -> np.ndarray:
        return x[0].cpu().numpy()

    # --- Policy -------------------------------------------------------------------------
    def reset(self) -> None:
        """Start of an episode or a new instruction: nothing is carried between plans (except the
        running chunks of temporal ensembling, cleared here)."""
        self._chunks, self._step = [], 0

    def plan(self, obs: AgentInput, instruction: str) -> FlowPlan:  # pragma: no cover - abstract
        raise NotImplementedError

    def act(self, plan: FlowPlan, obs: AgentInput, step_in_plan: int) -> np.ndarray:
        """The plan's action for this step; with eval.ensemble > 0 (temporal ensembling), the average of
        what every still-running chunk planned for this step, weighted exp(-ensemble * age in plans)."""
        if plan.actions is None or len(plan.actions) == 0:
            raise SofError(f"row '{self.name}' needs a plan with an action chunk; this plan has none")
        j = min(max(int(step_in_plan), 0), len(plan.actions) - 1)
        if self.ensemble <= 0:
            return np.clip(plan.actions[j], -1.0, 1.0).astype(np.float64)
        if not self._chunks or self._chunks[-1][1] is not plan.actions:
            self._chunks.append((self._step - j, plan.actions))
        now = self._step
        self._chunks = [(st, c) for st, c in self._chunks if 0 <= now - st < len(c)]
        n = len(self._chunks)
        acts = np.stack([c[now - st] for st, c in self._chunks])
        w = np.exp(-self.ensemble * np.arange(n - 1, -1, -1, dtype=np.float64))[:, None]  # newest weighs 1
        self._step += 1
        return np.clip((acts * w).sum(0) / w.sum(), -1.0, 1.0).astype(np.float64)


class _FlowSkillPolicy(CheckpointPolicy):
    """Stage 2 writes skill tokens, the frozen Stage-1 decoder turns them into a flow plan."""

    @torch.no_grad()
    def _flow_plan(self, obs: AgentInput, instruction: str):
        img, text, size = self._inputs(obs, instruction)
        tokens = self.models["policy"].generate(img, text, self._policy_proprio(obs), **self._sampling())
        flow = self.models["skill"].decode_ids(tokens, img)
        return img, tokens, flow, size

    def _plan(self, tokens, flow, size, actions=None) -> FlowPlan:
        return FlowPlan(self._np(tokens).astype(np.int64), self._np(flow), size,
                        None if actions is None else self._np(actions), frames_per_step=int(self.cfg.skill.stride))


class _SofPlanGraph(torch.nn.Module):
    """SOF's whole plan as one module (tokens -> flow plan -> action chunk), so it can be traced."""

    def __init__(self, models: dict[str, torch.nn.Module], head: str = "f2a", use_proprio: bool = False,
                 temperature: float = 0.0, top_k: int = 0):
        super().__init__()
        self.policy, self.skill, self.f2a = models["policy"], models["skill"], models[head]
        self.use_proprio, self.temperature, self.top_k = use_proprio, temperature, top_k

    def forward(self, img: torch.Tensor, text: torch.Tensor, proprio: torch.Tensor):
        tokens = self.policy.generate(img, text, proprio if self.use_proprio else None, self.temperature, self.top_k)
        flow = self.skill.decode_ids(tokens, img)
        return tokens, flow, self.f2a(flow, img, proprio)


class SofPolicy(_FlowSkillPolicy):
    """SOF: flow plan -> learned Flow2Action head (plan, frame, proprioception) -> action chunk."""

    name = "sof"
    head = "f2a"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._graph = _SofPlanGraph(self.models, self.head, bool(self.cfg.policy.use_proprio), **self._sampling())

    @torch.no_grad()
    def plan(self, obs: AgentInput, instruction: str) -> FlowPlan:
        img, text, size = self._inputs(obs, instruction)
        tokens, flow, actions = self._graph(img, text, self._proprio(obs))
        return self._plan(tokens, flow, size, actions)

    @torch.no_grad()
    def warm_up(self, trace: bool = True) -> None:
        """Before the first real frame (the ROS policy node calls this at start-up): optionally swap
        the plan networks for a TorchScript trace of them at batch 1 -- the same operations on the
        same weights (greedy decoding has no data-dependent Python branch; the 4-token loop is
        unrolled), with less Python dispatch per plan -- then run one plan on a blank frame so oneDNN
        and the allocator have built everything before the first real frame."""
        img = torch.zeros((1, self.cfg.skill.image_res, self.cfg.skill.image_res, 3), dtype=torch.uint8, device=self.device)
        text = torch.zeros((1, self.cfg.policy.text_dim), dtype=torch.float32, device=self.device)
        proprio = torch.zeros((1, 4), dtype=torch.float32, device=self.device)
        if trace and self.cfg.policy.temperature <= 0 and not isinstance(self._graph, torch.jit.ScriptModule):
            import warnings  # (sampled decoding stays eager: a trace would freeze its random draws)

            with warnings.catch_warnings():  # shape checks become constants: right for a fixed input size
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                graph = _SofPlanGraph(self.models, self.head, bool(self.cfg.policy.use_proprio)).eval()
                self._graph = torch.jit.trace(graph, (img, text, proprio), check_trace=False)
        for _ in range(2):
            self._graph(img, text, proprio)


class SofPlanOnlyPolicy(SofPolicy):
    """SOF whose action head sees only the flow plan and proprioception, not the frame: how much of the
    success the plan itself carries (the frame still conditions Stage 2 and the decoder)."""

    name = "sof_plan_only"
    head = "f2a_plan_only"


class Skill2ActionPolicy(_FlowSkillPolicy):
    """Ablation: the same tokens straight to actions (the flow plan is kept for display only)."""

    name = "skill2action"

    @torch.no_grad()
    def plan(self, obs: AgentInput, instruction: str) -> FlowPlan:
        img, tokens, flow, size = self._flow_plan(obs, instruction)
        return self._plan(tokens, flow, size, self.models["skill2action"](tokens, img, self._proprio(obs)))


class BCPolicy(CheckpointPolicy):
    """Behaviour cloning: image + instruction + proprioception -> action chunk, no skills."""

    name = "bc"

    @torch.no_grad()
    def plan(self, obs: AgentInput, instruction: str) -> FlowPlan:
        img, text, size = self._inputs(obs, instruction)
        actions = self.models["bc"](text, img, self._proprio(obs))
        return FlowPlan(np.zeros(0, np.int64), self._no_flow(), size, self._np(actions))


class PixelSkillsPolicy(CheckpointPolicy):
    """Ablation: tokens of how future frames change instead of flow, inverse dynamics on them."""

    name = "pixel_skills"

    @torch.no_grad()
    def plan(self, obs: AgentInput, instruction: str) -> FlowPlan:
        img, text, size = self._inputs(obs, instruction)
        tokens = self.models["pixel_policy"].generate(img, text, self._policy_proprio(obs), **self._sampling())
        pixel_skill = self.models["pixel_skill"]
        change = pixel_skill.decode_ids(tokens, img)
        actions = self.models["pixel2action"](change, img, self._proprio(obs))
        frames = tensor_to_image(pixel_skill.future_frames(change, img))
        return FlowPlan(self._np(tokens).astype(np.int64), self._no_flow(), size, self._np(actions),
                        self._np(frames))
