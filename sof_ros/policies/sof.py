"""The rows loaded from a `sof-train` checkpoint: SOF (learned and learning-free Flow2Action) and
the comparisons trained on the same data (Skill2Action, behaviour cloning, pixel-space skills)."""
from __future__ import annotations

import copy
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
        # sampled decoding draws from this, re-seeded at every reset: an episode replays exactly
        self._gen = torch.Generator(device=device).manual_seed(0)

    @classmethod
    def load(cls, checkpoint, device: str = "cpu", replan_every: int | None = None, task: str | None = None,
             eval_cfg=None, solver: dict | None = None):
        """`eval_cfg`: the evaluation settings to run with instead of the checkpoint's own `eval` section;
        `solver`: geometric-solver settings over the row's own (load_policy lets them reach only the
        rows that run one)."""
        from sof_ros.config import load_checkpoint_config
        from sof_ros.train import build_models, load_weights

        if checkpoint is None:
            raise SofError(f"row '{cls.name}' needs a checkpoint directory (sof-train writes one; "
                           "the shipped one is models/sof_metaworld)")
        path = Path(checkpoint)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise SofError("--device cuda requested but no CUDA device is available; use --device cpu")
        cfg = load_checkpoint_config(path)
        if eval_cfg is not None:
            cfg.eval = copy.deepcopy(eval_cfg)
        models = build_models(cfg)
        for stage in row_spec(cls.name).stages:
            load_weights(models[stage], path / f"{stage}.pt", device)
        instr_path = path / "instructions.pt"
        instructions = {}
        if instr_path.is_file():
            instructions = {k: v.numpy() for k, v in torch.load(instr_path, weights_only=True).items()}
        extra = {"solver": solver} if solver else {}  # only the learning-free rows' constructors take it
        return cls(cfg, models, instructions, device, replan_every, **extra)

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
        return {"temperature": float(p.temperature), "top_k": int(p.top_k), "generator": self._gen}

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
        running chunks of temporal ensembling, cleared here). Sampled decoding starts its random
        stream again, so the same episode gives the same plans."""
        self._chunks, self._step = [], 0
        self._gen.manual_seed(0)

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
                 temperature: float = 0.0, top_k: int = 0, generator: torch.Generator | None = None):
        super().__init__()
        self.policy, self.skill, self.f2a = models["policy"], models["skill"], models[head]
        self.use_proprio, self.temperature, self.top_k = use_proprio, temperature, top_k
        self.generator = generator  # sampled decoding only (greedy plans, the traced ones, draw nothing)

    def forward(self, img: torch.Tensor, text: torch.Tensor, proprio: torch.Tensor):
        tokens = self.policy.generate(img, text, proprio if self.use_proprio else None, self.temperature, self.top_k,
                                      self.generator)
        flow = self.skill.decode_ids(tokens, img)
        return tokens, flow, self.f2a(flow, img, proprio)


class SofPolicy(_FlowSkillPolicy):
    """SOF: flow plan -> learned Flow2Action head (plan, frame, proprioception) -> action chunk."""

    name = "sof"
    head = "f2a"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._graph = _SofPlanGraph(self.models, self.head, bool(self.cfg.policy.use_proprio), **self._sampling())
        self.runtime, self.runtime_note = "eager", ""  # warm_up() may choose another

    @torch.no_grad()
    def plan(self, obs: AgentInput, instruction: str) -> FlowPlan:
        img, text, size = self._inputs(obs, instruction)
        tokens, flow, actions = self._graph(img, text, self._proprio(obs))
        return self._plan(tokens, flow, size, actions)

    @torch.no_grad()
    def warm_up(self, runtime: str = "torchscript") -> str:
        """Before the first real frame (the ROS policy node calls this at start-up): choose what runs
        the plan networks -- `eager` (as trained and evaluated), `torchscript` (a trace at batch 1:
        the same operations on the same weights, less Python dispatch) or `onnxruntime` (that graph
        exported from the loaded weights in memory and run by ONNX Runtime on the CPU, about 2.5x
        faster than the trace at batch 1 on a 2-core CPU; CUDA devices stay on torch) -- then run a
        plan on a blank frame so kernels and allocators are built before the first real frame.
        A runtime is kept only if it reproduces the eager plans (same tokens, flow and actions within
        1e-4) on check inputs; otherwise, and when onnxruntime is not installed, the trace is used
        and the reason logged. Sampled decoding stays eager: a graph would freeze its random draws.
        Returns the runtime in use."""
        if runtime not in RUNTIMES:
            raise SofError(f"runtime must be one of {RUNTIMES}, got '{runtime}'")
        self.runtime_note = ""  # why the runtime differs from the one asked for, if it does
        r = self.cfg.skill.image_res
        img = torch.zeros((1, r, r, 3), dtype=torch.uint8, device=self.device)
        text = torch.zeros((1, self.cfg.policy.text_dim), dtype=torch.float32, device=self.device)
        proprio = torch.zeros((1, 4), dtype=torch.float32, device=self.device)
        if self.cfg.policy.temperature > 0:
            runtime, self.runtime_note = "eager", "sampled decoding (policy.temperature > 0) runs eager"
        elif runtime == "onnxruntime" and not str(self.device).startswith("cpu"):
            runtime, self.runtime_note = "torchscript", f"onnxruntime runs on the CPU; device {self.device} runs the trace"
        eager = _SofPlanGraph(self.models, self.head, bool(self.cfg.policy.use_proprio)).eval()
        graph = eager if runtime != "eager" else self._graph  # (eager keeps the sampling settings)
        if runtime in ("torchscript", "onnxruntime"):
            import warnings

            with warnings.catch_warnings():  # shape checks become constants: right for a fixed input size
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                graph = torch.jit.trace(eager, (img, text, proprio), check_trace=False)
        if runtime == "onnxruntime":
            try:
                candidate = _OnnxPlanGraph(eager, (img, text, proprio))
                problem = _plan_mismatch(eager, candidate, self._check_inputs())
            except Exception as exc:  # not installed, an operator it cannot export: the trace still works
                problem = f"{type(exc).__name__}: {exc}"
            if problem:
                runtime, self.runtime_note = "torchscript", f"onnxruntime not used ({problem}); running the trace"
            else:
                graph = candidate
        self._graph, self.runtime = graph, runtime
        for _ in range(2):
            self._graph(img, text, proprio)
        return runtime

    def _check_inputs(self) -> list[tuple[torch.Tensor, ...]]:
        """Inputs a runtime must plan like eager torch on: blank and noisy frames, varied proprioception
        and instructions (the checkpoint's own embeddings)."""
        g = torch.Generator().manual_seed(0)
        r, d = self.cfg.skill.image_res, self.cfg.policy.text_dim
        texts = [torch.as_tensor(self.text.cache[k], dtype=torch.float32).reshape(1, d) for k in sorted(self.text.cache)[:4]]
        texts = texts or [torch.zeros(1, d)]
        out = []
        for k in range(6):
            img = torch.randint(0, 256, (1, r, r, 3), dtype=torch.uint8, generator=g) if k else torch.zeros((1, r, r, 3), dtype=torch.uint8)
            proprio = torch.cat([torch.rand(1, 3, generator=g) * 0.4 + torch.tensor([[-0.2, 0.5, 0.05]]), torch.rand(1, 1, generator=g)], 1)
            out.append(tuple(t.to(self.device) for t in (img, texts[k % len(texts)], proprio)))
        return out


RUNTIMES = ("onnxruntime", "torchscript", "eager")


class _OnnxPlanGraph:
    """The plan graph exported to ONNX (in memory, from the weights already loaded: nothing is read
    or downloaded) and run by ONNX Runtime with torch's intra-op thread count (the node's
    agent.torch_threads); called like the torch module."""

    def __init__(self, module: torch.nn.Module, example: tuple[torch.Tensor, ...]):
        import io

        import onnxruntime as ort

        buf = io.BytesIO()
        torch.onnx.export(module, example, buf, input_names=["image", "text", "proprio"],
                          output_names=["tokens", "flow", "actions"], opset_version=17, dynamo=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = torch.get_num_threads(), 1
        options.log_severity_level = 3  # errors only
        self.session = ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])

    def __call__(self, img: torch.Tensor, text: torch.Tensor, proprio: torch.Tensor):
        feed = {"image": img.cpu().numpy(), "text": text.cpu().numpy(), "proprio": proprio.cpu().numpy()}
        return tuple(torch.from_numpy(x) for x in self.session.run(None, feed))


def _plan_mismatch(reference, candidate, inputs, atol: float = 1e-4) -> str | None:
    """None if `candidate` plans like `reference` on every input, else how it differs."""
    for k, args in enumerate(inputs):
        (t0, f0, a0), (t1, f1, a1) = reference(*args), candidate(*args)
        if not torch.equal(t0.cpu(), t1.cpu()):
            return f"check input {k}: tokens {t1.tolist()} instead of {t0.tolist()}"
        for name, x, y in (("flow", f0, f1), ("actions", a0, a1)):
            err = float((x.cpu() - y.cpu()).abs().max())
            if not err <= atol:
                return f"check input {k}: {name} differs by {err:.2g} (> {atol:g})"
    return None


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
