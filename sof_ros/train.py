"""`sof-train`: the three SOF stages (and the Skill2Action / BC comparisons) from one config.

    sof-train --config config/metaworld.yaml                 # the stages of every row in eval.rows
    sof-train --config config/metaworld.yaml --rows sof bc   # the stages those rows need
    sof-train --config config/metaworld.yaml --stage policy  # one stage (earlier ones must exist)
    sof-train --config config/metaworld.yaml --stage pixel_skill pixel_policy pixel2action  # pixel ablation
    torchrun --nproc_per_node 2 -m sof_ros.train --config ...   # DDP, gloo on CPU / nccl on CUDA
    sof-train --config config/transfer_panda.yaml --init-from runs/sawyer --stage f2a --out runs/sawyer_to_panda
        # Stage 3 for a new arm on Stages 1-2 learned from another arm's videos (docs/transfer.md)

Outputs in train.out: config.yaml, <stage>.pt weights (load with weights_only=True),
instructions.pt (cached instruction embeddings), metrics.json, embodiment.json (the arm, camera and
action frame the checkpoint drives, and which arm's data trained each stage) and plots/*.png.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml

from sof_ros.config import SofConfig, load_config, to_dict
from sof_ros.errors import SofError, run_cli
from sof_ros.flow2action.learned import (BCNet, Flow2ActionNet, Pixels2ActionNet, Skill2ActionNet, chunk_length,
                                         random_shift)
from sof_ros.learn import reports  # noqa: F401 (imported lazily below would hide errors)
from sof_ros.learn.data import SegmentData
from sof_ros.learn.loop import fit, init_distributed, is_main
from sof_ros.nn import tensor_to_image
from sof_ros.policies import stages_for
from sof_ros.policy.model import SkillPolicy
from sof_ros.skills.model import PixelSkillAutoencoder, SkillAutoencoder, codebook_usage, epe, weighted_flow_loss
from sof_ros.text import InstructionEncoder

STAGES = ("skill", "policy", "f2a", "f2a_plan_only", "skill2action", "bc", "pixel_skill", "pixel_policy",
          "pixel2action")
PLAN_SOURCES = ("encoder", "predicted")
STEP_BUDGET = {  # the train.* step budget each stage runs for (both skill spaces alike; sof-bench train reads it)
    "skill": "skill_steps", "pixel_skill": "skill_steps", "policy": "policy_steps", "pixel_policy": "policy_steps",
    "f2a": "f2a_steps", "f2a_plan_only": "f2a_steps", "pixel2action": "f2a_steps",
    "skill2action": "baseline_steps", "bc": "baseline_steps"}
# Per skill space (the method's flow, the pixel-space ablation): Stage-1 model, Stage-2 model and the
# SegmentData attribute holding the token ids of every segment.
SPACES = {"flow": ("skill", "policy", "tokens"), "pixel": ("pixel_skill", "pixel_policy", "pixel_tokens")}


def segment_data(cfg: SofConfig, progress: bool = True) -> SegmentData:
    """The training tensors of cfg.train.dataset as every stage reads them (the one place their
    options come from, so the --jobs processes and their shared cache agree)."""
    return SegmentData(cfg.train.dataset, cfg.skill, flow_name=cfg.flow.estimator, val_fraction=cfg.train.val_fraction,
                       progress=progress, proprio_required=cfg.f2a.use_proprio or cfg.policy.use_proprio,
                       chunk=chunk_length(cfg.f2a, cfg.skill), cache=cfg.train.cache)


def build_models(cfg: SofConfig) -> dict[str, torch.nn.Module]:
    skill = SkillAutoencoder(cfg.skill)
    n = skill.codebook_size
    return {
        "skill": skill,
        "policy": SkillPolicy(cfg.policy, cfg.skill, n),
        "f2a": Flow2ActionNet(cfg.f2a, cfg.skill),
        "skill2action": Skill2ActionNet(cfg.f2a, cfg.skill, n),
        "bc": BCNet(cfg.f2a, cfg.skill, cfg.policy.text_dim),
        # built last so that adding them left the initialisation of the models above unchanged
        "pixel_skill": PixelSkillAutoencoder(cfg.skill),
        "pixel_policy": SkillPolicy(cfg.policy, cfg.skill, n),
        "pixel2action": Pixels2ActionNet(cfg.f2a, cfg.skill),
        "f2a_plan_only": Flow2ActionNet(cfg.f2a, cfg.skill, use_image=False),  # the head without the image
    }


def save_weights(model: torch.nn.Module, path: Path) -> None:
    torch.save(model.state_dict(), path)


def load_weights(model: torch.nn.Module, path: str | Path, device: str = "cpu") -> torch.nn.Module:
    """The one place stage weights are read (sof-train; sof-eval and the ROS nodes through a policy's
    load). A missing, truncated or mismatched file is a one-line SofError naming the file and what to
    do, never a torch traceback; `model` is left untouched then."""
    path = Path(path)
    stage = path.stem
    if not path.is_file():
        raise SofError(f"{path} is missing; train that stage first (sof-train --stage {stage})")
    remedy = (f"retrain that stage (sof-train --stage {stage} with the config in {path.parent}) "
              "or re-copy the checkpoint")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, UnpicklingError, EOFError ...
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(". ")[0][:120]
        raise SofError(f"{path} is not readable {stage} weights ({reason}); the file is truncated or "
                       f"damaged: {remedy}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SofError(f"{path} holds {type(state).__name__}, not a state dict of tensors saved by sof-train: {remedy}")
    problems = _state_mismatch(model.state_dict(), state)
    if problems:
        raise SofError(f"{path} does not fit the {stage} model of this config ({problems}); it was trained "
                       f"with another config or is another stage's file: {remedy}")
    model.load_state_dict(state)
    return model.to(device).eval()


def _state_mismatch(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> str:
    """'' when `found` has exactly the keys and shapes of `expected`, else a short summary."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [f"'{k}' is {tuple(found[k].shape)}, model wants {tuple(v.shape)}"
              for k, v in expected.items() if k in found and found[k].shape != v.shape]
    parts = [f"{len(missing)} missing tensor(s), e.g. '{missing[0]}'"] if missing else []
    parts += [f"{len(unexpected)} unexpected tensor(s), e.g. '{unexpected[0]}'"] if unexpected else []
    parts += [f"{len(shapes)} shape mismatch(es), e.g. {shapes[0]}"] if shapes else []
    return "; ".join(parts)


class Trainer:
    def __init__(self, cfg: SofConfig, device: str = "cpu", progress: bool = True):
        self.cfg = cfg
        self.device = init_distributed(device)
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise SofError("--device cuda requested but no CUDA device is available; use --device cpu")
        torch.set_num_threads(cfg.train.num_threads)
        self.progress = progress
        self.out = Path(cfg.train.out)
        self.plots = self.out / "plots"
        if is_main():
            self.plots.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        rank = dist.get_rank() if dist.is_initialized() else 0
        self.rng = np.random.default_rng(cfg.train.seed + rank)
        self._gen = torch.Generator().manual_seed(cfg.train.seed + rank)
        self._predicted: dict = {}  # Stage 2's tokens on D_act, per skill space
        torch.manual_seed(cfg.train.seed)  # same init on every rank; DDP also broadcasts
        if cfg.f2a.plan_source not in PLAN_SOURCES:
            raise SofError(f"f2a.plan_source must be one of {PLAN_SOURCES}, got '{cfg.f2a.plan_source}'")
        self.data = segment_data(cfg, progress=progress and is_main())
        self.d_act = self.data.d_act_episodes(cfg.f2a.d_act_episodes_per_task_camera)
        self.models = build_models(cfg)
        for m in self.models.values():
            m.to(self.device)
        encoder = InstructionEncoder()
        self.text = torch.from_numpy(np.stack([encoder(i) for i in self.data.instructions]))
        self.instr_idx = torch.from_numpy(self.data.instruction_index())
        if is_main():
            torch.save({k: torch.from_numpy(v) for k, v in encoder.cache.items()}, self.out / "instructions.pt")
        self.metrics: dict = {}
        self.histories: dict[str, list] = {}
        self.timing: dict[str, float] = {}

    # --- batches --------------------------------------------------------------------------
    def _batch(self, starts: np.ndarray, size: int | None = None) -> torch.Tensor:
        if len(starts) == 0:
            raise SofError("no training samples for this stage: check the dataset split "
                           "(D_act needs episodes collected with --act-fraction > 0)")
        pick = self.rng.choice(starts, size=size or self.cfg.train.batch_size)
        return torch.from_numpy(pick)

    def _to(self, *tensors):
        return [t.to(self.device) for t in tensors]

    def _fit(self, name, model, loss_fn):
        """Train stage `name` for its step budget (STEP_BUDGET)."""
        steps = getattr(self.cfg.train, STEP_BUDGET[name])
        t0 = time.time()
        hist = fit(name, model, loss_fn, steps, self.out, self.cfg.train.lr, self.cfg.train.weight_decay,
                   self.cfg.train.log_every, self.cfg.train.ckpt_every, self.progress)
        self.timing[name] = time.time() - t0
        self.histories[name] = hist
        if is_main():
            save_weights(model, self.out / f"{name}.pt")
        return hist

    # --- stage 1 --------------------------------------------------------------------------
    def _targets(self, space: str, starts: torch.Tensor) -> torch.Tensor:
        """What a skill token summarises: H flow fields, or H future frames' change for the pixel ablation."""
        d = self.data
        return d.segment(starts, d.flow) if space == "flow" else d.future_changes(starts)

    def _train_autoencoder(self, space: str) -> None:
        name = SPACES[space][0]
        d, model = self.data, self.models[name]
        starts = d.starts("train")
        err = "epe" if space == "flow" else "mae"
        if space == "flow" and self.cfg.skill.flow_scale == 0 and not (self.out / f"{name}.ckpt").exists():
            model.scale.fill_(d.flow_std(starts, seed=self.cfg.train.seed))  # normalise by the data's statistics
        thr = d.moving_threshold if space == "flow" else 0.1  # pixel ablation: a colour change of 5 % moves

        def loss_fn(m, step):
            s = self._batch(starts)
            target, img = self._to(self._targets(space, s), d.rgb[s])
            rec, _ = m(target, img)
            moving = target.norm(dim=-1) > thr
            loss = weighted_flow_loss(rec, target, model.scale, moving, self.cfg.skill.moving_weight)
            return {"loss": loss,
                    err: (epe(rec, target) if space == "flow" else (rec - target).abs().mean()).detach()}

        self._fit(name, model, loss_fn)
        self.encode_tokens(space)

    def train_skill(self) -> None:
        self._train_autoencoder("flow")
        if is_main():
            self.report_skill()

    def train_pixel_skill(self) -> None:
        self._train_autoencoder("pixel")
        if is_main():
            self.report_pixel_skill()

    @torch.no_grad()
    def encode_tokens(self, space: str = "flow") -> None:
        """Token ids of the segment starting at every frame (targets for stage 2)."""
        d, model = self.data, self.models[SPACES[space][0]].eval()
        all_starts = torch.arange(len(d.rgb) - d.span - 1)
        ids = []
        for chunk in all_starts.split(512):
            ids.append(model.encode(self._targets(space, chunk).to(self.device))[1].cpu())
        pad = torch.zeros(d.span + 1, ids[0].shape[1], dtype=torch.long)
        setattr(d, SPACES[space][2], torch.cat(ids + [pad]))
        name = SPACES[space][0]
        if is_main() and (self.out / f"{name}.pt").is_file():  # later action stages in other processes reuse them
            torch.save({"fingerprint": self._token_fingerprint(name), "tokens": getattr(d, SPACES[space][2])},
                       self.out / f"{name}_tokens.pt")

    def _report_starts(self, n: int) -> tuple[str, torch.Tensor]:
        """About n segment starts for a report, from held-out episodes when there are any."""
        split, val = "val", self.data.starts("val")
        if len(val) == 0:  # no held-out episodes (tiny configs): report on training segments, say so
            split, val = "train", self.data.starts("train")
        return split, torch.from_numpy(val[:: max(1, len(val) // n)])

    @torch.no_grad()
    def report_skill(self) -> None:
        """Stage 1 on held-out segments. EPE in working-resolution px over all pixels and over the
        *moving* ones (|real flow| above skill.moving_px source px: the same set Stage 2 is scored on),
        with the trivial baseline (predicting no motion) beside each."""
        d, model = self.data, self.models["skill"]
        split, s = self._report_starts(1024)
        rec, flow = [], []
        for c in s.split(256):
            f, im = self._to(d.segment(c), d.rgb[c])
            rec.append(model(f, im)[0])
            flow.append(f)
        rec, flow = torch.cat(rec), torch.cat(flow)
        img = d.rgb[s]
        moving = flow.norm(dim=-1) > d.moving_threshold
        usage = codebook_usage(d.tokens[torch.from_numpy(d.starts("train"))], model.codebook_size)
        self.metrics["skill"] = {
            "split": split, "moving_threshold_px_working": d.moving_threshold, "moving_pixel_share": float(moving.float().mean()),
            "flow_scale": float(model.scale),
            "epe_px_working": float(epe(rec, flow)), "zero_flow_epe_px_working": float(flow.norm(dim=-1).mean()),
            "epe_moving_px_working": float(epe(rec, flow, moving)) if moving.any() else None,
            "zero_flow_epe_moving_px_working": float(flow.norm(dim=-1)[moving].mean()) if moving.any() else None,
            "codebook_size": model.codebook_size, **{f"train_{k}": v for k, v in usage.items()},
        }
        energetic = torch.argsort(flow.norm(dim=-1).mean((1, 2, 3)), descending=True)[:4].cpu()  # img is on the CPU
        reports.flow_reconstructions(img[energetic].cpu().numpy(), flow[energetic].cpu().numpy(),
                                     rec[energetic].cpu().numpy(), self.plots / "skill_reconstructions.png")
        reports.token_usage(d.tokens[torch.from_numpy(d.starts("train"))].numpy(), model.codebook_size,
                            self.plots / "skill_token_usage.png")
        shown = [e for e in d.episodes if e.is_val] or d.episodes  # no val split: show training episodes
        timelines = [(f"{e.task} {e.camera} ({'held out' if e.is_val else 'train'})",
                      d.tokens[e.start: e.start + e.length - 1, 0].numpy()) for e in shown[::max(1, len(shown) // 24)]]
        reports.token_timelines(timelines[:24], model.codebook_size, self.plots / "skill_token_timelines.png")
        self.metrics["skill"]["token_sharing"] = token_sharing(d, seed=self.cfg.train.seed)

    # --- stage 2 --------------------------------------------------------------------------
    def _train_token_policy(self, space: str) -> None:
        name = SPACES[space][1]
        d, model = self.data, self.models[name]
        tokens = self._ensure_tokens(space)
        pc = self.cfg.policy
        starts = d.starts("train", exclude=self.d_act if pc.exclude_d_act else None)
        if pc.use_proprio:
            videos = [e for e in d.episodes if not e.has_proprio]
            if videos:  # zeros for a video's arm state would teach Stage 2 a state no robot reports
                raise SofError(f"Stage 2 reads proprioception (policy.use_proprio: true) but {len(videos)} of "
                               f"{len(d.episodes)} episodes have no ee_pos/gripper (videos, e.g. task "
                               f"'{videos[0].task}'); set policy.use_proprio: false to learn from videos")
            model.proprio_mean.copy_(d.proprio[starts].mean(0))
            model.proprio_std.copy_(d.proprio[starts].std(0).clamp_min(1e-3))

        def loss_fn(m, step):
            s = self._batch(starts)
            img, _ = random_shift(d.rgb[s], None, pc.image_shift)
            img, text, tok, prop = self._to(img, self.text[self.instr_idx[s]], tokens[s], d.proprio[s])
            logits = m(img, text, tok, prop)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tok.reshape(-1))
            return {"loss": loss, "acc": (logits.argmax(-1) == tok).float().mean().detach()}

        self._fit(name, model, loss_fn)
        self.metrics.setdefault("data", {})[name] = {"train_samples": int(len(starts)),
                                                     "excludes_d_act": bool(pc.exclude_d_act)}

    def train_policy(self) -> None:
        self._train_token_policy("flow")
        if is_main():
            self.report_policy()

    def train_pixel_policy(self) -> None:
        self._train_token_policy("pixel")
        if is_main():
            self.report_pixel_policy()

    def _policy_inputs(self, s: torch.Tensor):
        d = self.data
        return self._to(d.rgb[s], self.text[self.instr_idx[s]], d.proprio[s])

    @torch.no_grad()
    def report_policy(self) -> None:
        """Stage 2 on held-out segments: token accuracy beside chance (the most frequent token at each
        position), and the flow plan's EPE on the moving pixels of Stage 1's report, beside the plan of
        the real flow's own tokens (what Stage 1 allows), a plan from another segment's tokens (chance),
        a plan for another task's instruction (does Stage 2 listen?) and no motion at all."""
        d, policy, skill = self.data, self.models["policy"], self.models["skill"]
        split, s = self._report_starts(1024)
        gen = torch.Generator().manual_seed(self.cfg.train.seed)
        out = {k: [] for k in ("pred", "plan", "ae", "shuf", "wrong")}
        instr = self.instr_idx[s]
        other = (instr + torch.randint(1, max(2, len(self.text)), instr.shape, generator=gen)) % len(self.text)
        perm = torch.randperm(len(s), generator=gen)
        for idx in torch.arange(len(s)).split(256):
            c = s[idx]
            img, text, prop = self._policy_inputs(c)
            pred = policy.generate(img, text, prop)
            out["pred"].append(pred)
            out["plan"].append(skill.decode_ids(pred, img))
            out["ae"].append(skill.decode_ids(d.tokens[c].to(self.device), img))
            out["shuf"].append(skill.decode_ids(d.tokens[s[perm[idx]]].to(self.device), img))
            wrong = policy.generate(img, self.text[other[idx]].to(self.device), prop)
            out["wrong"].append(skill.decode_ids(wrong, img))
        out = {k: torch.cat(v) for k, v in out.items()}
        tok = d.tokens[s].to(self.device)
        flow = d.segment(s).to(self.device)
        moving = flow.norm(dim=-1) > d.moving_threshold
        train_tok = d.tokens[torch.from_numpy(d.starts("train"))]
        majority = torch.stack([train_tok[:, i].bincount(minlength=skill.codebook_size).argmax()
                                for i in range(train_tok.shape[1])])
        pred = out["pred"]

        def m(x):
            return float(epe(x, flow, moving)) if moving.any() else None

        self.metrics["policy"] = {"split": split, **{k: v for k, v in {
            "token_accuracy": float((pred == tok).float().mean()),
            "first_token_accuracy": float((pred[:, 0] == tok[:, 0]).float().mean()),
            "majority_token_accuracy": float((majority[None].to(tok.device) == tok).float().mean()),
            "plan_epe_px_working": float(epe(out["plan"], flow)),
            "plan_epe_moving_px_working": m(out["plan"]),
            "autoencoder_epe_moving_px_working": m(out["ae"]),
            "shuffled_tokens_epe_moving_px_working": m(out["shuf"]),
            "other_instruction_plan_epe_moving_px_working": m(out["wrong"]),
            "zero_plan_epe_moving_px_working": m(torch.zeros_like(flow)),
        }.items()}}
        plan, img = out["plan"], d.rgb[s]
        energetic = torch.argsort(flow.norm(dim=-1).mean((1, 2, 3)), descending=True)[:4].cpu()  # img is on the CPU
        reports.flow_reconstructions(img[energetic].cpu().numpy(), flow[energetic].cpu().numpy(),
                                     plan[energetic].cpu().numpy(), self.plots / "policy_flow_plans.png",
                                     title="real future flow (top) vs flow plan from predicted tokens (bottom)")

    # --- pixel-space skills ablation reports -----------------------------------------------
    @torch.no_grad()
    def report_pixel_skill(self) -> None:
        d, model = self.data, self.models["pixel_skill"]
        split, s = self._report_starts(512)
        change, img = self._to(self._targets("pixel", s), d.rgb[s])
        rec, _ = model(change, img)
        usage = codebook_usage(d.pixel_tokens[torch.from_numpy(d.starts("train"))], model.codebook_size)
        self.metrics["pixel_skill"] = {  # mean absolute error of the future frames, pixel values in [0, 1]
            f"{split}_mae_pixel_values": float((rec - change).abs().mean()) / 2,
            f"{split}_nothing_moves_mae": float(change.abs().mean()) / 2,  # repeat the current frame
            "codebook_size": model.codebook_size, **{f"train_{k}": v for k, v in usage.items()},
        }
        self._frame_plot(model, img, change, rec, "pixel_skill_reconstructions.png",
                         "future frames (top) vs decoded from pixel tokens (bottom)")

    @torch.no_grad()
    def report_pixel_policy(self) -> None:
        d, policy, skill = self.data, self.models["pixel_policy"], self.models["pixel_skill"]
        split, s = self._report_starts(256)
        img, text, tok, change = self._to(d.rgb[s], self.text[self.instr_idx[s]], d.pixel_tokens[s],
                                          self._targets("pixel", s))
        pred = policy.generate(img, text, d.proprio[s].to(self.device))
        plan = skill.decode_ids(pred, img)
        self.metrics["pixel_policy"] = {f"{split}_{k}": v for k, v in {
            "token_accuracy": float((pred == tok).float().mean()),
            "plan_mae_pixel_values": float((plan - change).abs().mean()) / 2,
        }.items()}
        self._frame_plot(skill, img, change, plan, "pixel_policy_plans.png",
                         "real future frames (top) vs frames from predicted pixel tokens (bottom)")

    def _frame_plot(self, skill, img, change, decoded, name: str, title: str) -> None:
        top = torch.argsort(change.abs().mean((1, 2, 3, 4)), descending=True)[:4]  # most change
        real, dec = (tensor_to_image(skill.future_frames(c[top], img[top])).cpu().numpy() for c in (change, decoded))
        reports.frame_predictions(img[top].cpu().numpy(), real, dec, self.plots / name, title)

    # --- stage 3 and comparisons ------------------------------------------------------------
    def _ensure_tokens(self, space: str = "flow") -> torch.Tensor:
        name, _, attr = SPACES[space]
        if getattr(self.data, attr) is None:
            load_weights(self.models[name], self.out / f"{name}.pt", self.device)
            cached = self.out / f"{name}_tokens.pt"  # written by the process that encoded them
            if cached.is_file():
                state = torch.load(cached, weights_only=True)
                if torch.equal(state["fingerprint"], self._token_fingerprint(name)):
                    setattr(self.data, attr, state["tokens"])
                    return state["tokens"]
            self.encode_tokens(space)
        return getattr(self.data, attr)

    def _token_fingerprint(self, name: str) -> torch.Tensor:
        """Which weights and frames tokens were encoded from: the stage file's size and mtime, the frame count."""
        st = (self.out / f"{name}.pt").stat()
        return torch.tensor([st.st_size, st.st_mtime_ns, len(self.data.rgb)], dtype=torch.long)

    @torch.no_grad()
    def _predicted_tokens(self, space: str, starts: np.ndarray) -> torch.Tensor:
        """Stage 2's greedy tokens at every given start (its run-time output), (N_frames_total, n) with
        the given rows filled: what the action head sees at run time, errors included."""
        key = (space, len(starts), int(starts.sum()))
        if key in self._predicted:
            return self._predicted[key]
        d, policy = self.data, self.models[SPACES[space][1]]
        load_weights(policy, self.out / f"{SPACES[space][1]}.pt", self.device)
        out = torch.zeros_like(getattr(d, SPACES[space][2]))
        st = torch.from_numpy(starts)
        for c in st.split(512):
            img, text, prop = self._policy_inputs(c)
            out[c] = policy.generate(img, text, prop).cpu()
        self._predicted[key] = out
        return out

    def _action_stage(self, name: str, forward, space: str = "flow", plans: bool = False,
                      uses_tokens: bool = True) -> None:
        """Train an action head on D_act. `forward(m, s, img, prop, tok)`; with `plans`, the tokens are
        Stage 2's own predictions (f2a.plan_source predicted, a share f2a.predicted_fraction of the
        samples) so the head learns from plans as imperfect as at run time."""
        d, fc = self.data, self.cfg.f2a
        # BC reads no tokens: it must not wait for (or need) Stage 1
        tokens = self._ensure_tokens(space) if uses_tokens else torch.zeros(len(d.rgb), 1, dtype=torch.long)
        per = fc.d_act_episodes_per_task_camera
        starts = d.starts("train", d_act_only=True, d_act_per_task_camera=per)
        self._check_d_act(name, starts)
        for p in self.models[SPACES[space][0]].eval().parameters():
            p.requires_grad_(False)
        predicted = None
        if plans and fc.plan_source == "predicted":
            predicted = self._predicted_tokens(space, starts)
            agree = float((predicted[starts] == tokens[starts]).float().mean())
            self.metrics.setdefault("actions", {}).setdefault(name, {})["predicted_token_agreement_d_act"] = agree

        def loss_fn(m, step):
            s = self._batch(starts)
            tok = tokens[s]
            if predicted is not None:
                use = torch.rand(len(s), generator=self._gen) < fc.predicted_fraction
                tok = torch.where(use[:, None], predicted[s], tok)
            img, prop, act, tok = self._to(d.rgb[s], d.proprio[s], d.action_chunk(s), tok)
            pred = forward(m, s, img, prop, tok)
            return {"loss": F.mse_loss(pred, act)}

        self._fit(name, self.models[name], loss_fn)
        self.metrics.setdefault("actions", {}).setdefault(name, {}).update(
            {"train_samples": int(len(starts)), "d_act_episodes_per_task_camera": per,
             "d_act_episodes": len(d.d_act_episodes(per)), "plan_source": fc.plan_source if plans else None})

    def _check_d_act(self, name: str, starts: np.ndarray) -> None:
        """Say which action-labelled episodes an action stage cannot use, and stop if none is left."""
        skipped = self.data.d_act_without_proprio
        if skipped and is_main():
            print(f"warning: {name} leaves out {len(skipped)} in_d_act episode(s) without ee_pos/gripper "
                  f"(the head uses proprioception, f2a.use_proprio): {', '.join(skipped[:5])}"
                  f"{' ...' if len(skipped) > 5 else ''}", file=sys.stderr)
        if len(starts) == 0:
            raise SofError(f"{name} has no action-labelled episodes in {self.cfg.train.dataset}: it trains on episodes "
                           "flagged in_d_act with actions" + (" and ee_pos/gripper" if self.cfg.f2a.use_proprio else "")
                           + "; add some (sof-collect --act-fraction > 0, sof-import-mcap, sof-import-lerobot "
                           "--action-ee-delta) or train only the video stages (--stage skill policy)")

    def _decoded_plan_head(self, name: str, space: str = "flow") -> None:
        """A head on the decoded plan (flow, or the pixel ablation's frame change), the image and the plan
        moved together by the random shift."""
        skill = self.models[SPACES[space][0]]
        head = self.models[name]
        if hasattr(head, "scale") and space == "flow":
            head.scale.copy_(skill.scale)  # the plan in the same units Stage 1 works in
        shift = self.cfg.f2a.image_shift

        def forward(m, s, img, prop, tok):
            with torch.no_grad():  # the frozen decoder's plan, as at run time
                plan = skill.decode_ids(tok, img)
            img, plan = random_shift(img, plan, shift)
            return m(plan, img, prop)

        self._action_stage(name, forward, space, plans=True)

    def train_f2a(self) -> None:
        self._decoded_plan_head("f2a")

    def train_f2a_plan_only(self) -> None:
        self._decoded_plan_head("f2a_plan_only")

    def train_skill2action(self) -> None:
        shift = self.cfg.f2a.image_shift

        def forward(m, s, img, prop, tok):
            return m(tok, random_shift(img, None, shift)[0], prop)

        self._action_stage("skill2action", forward, plans=True)

    def train_bc(self) -> None:
        text, shift = self.text, self.cfg.f2a.image_shift

        def forward(m, s, img, prop, tok):
            return m(text[self.instr_idx[s]].to(self.device), random_shift(img, None, shift)[0], prop)

        self._action_stage("bc", forward, uses_tokens=False)

    def train_pixel2action(self) -> None:
        """Inverse dynamics from the decoded change of future frames, trained exactly like Flow2Action."""
        self._decoded_plan_head("pixel2action", space="pixel")

    def finish(self) -> None:
        if not is_main():
            return
        mpath = self.out / "metrics.json"
        from sof_ros.bench.meta import command_line, git_commit, machine

        stamp = {"command": command_line(), "commit": git_commit(), "machine": machine(),
                 "load_avg_1min_end": round(os.getloadavg()[0], 2)}
        new = {**self.metrics, "train_seconds": {k: round(v, 1) for k, v in self.timing.items()},
               "provenance": {k: stamp for k in self.timing}}  # per stage: the code and machine it was trained on
        import fcntl  # two `--jobs` processes may finish at once: read-merge-write under a lock

        with open(self.out / ".metrics.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            old = json.loads(mpath.read_text()) if mpath.exists() else {}
            mpath.write_text(json.dumps(deep_update(old, new), indent=2))
        hist = {}
        for name in STAGES:
            hp = self.out / f"{name}_history.json"
            if hp.exists():
                hist[name] = json.loads(hp.read_text())
        reports.loss_curves(hist, self.plots / "loss_curves.png")
        write_embodiment(self.out, self.cfg, tuple(self.timing))


VIDEO_STAGES = ("skill", "policy", "pixel_skill", "pixel_policy")  # learned from videos: any arm's


def write_embodiment(out: Path, cfg: SofConfig, trained: tuple[str, ...], copied: dict | None = None) -> None:
    """CHECKPOINT/embodiment.json: the arm, camera and action frame the checkpoint drives (its Stage 3
    and config), and per stage the arm and dataset it was learned from -- merged into what earlier
    runs recorded, like metrics.json. `copied`: stages taken from another checkpoint (--init-from)."""
    from sof_ros.embodiment import video_cameras
    from sof_ros.sim import embodiment_record

    path = out / "embodiment.json"
    old = json.loads(path.read_text()).get("stages", {}) if path.is_file() else {}
    record = {**embodiment_record(cfg.sim), "video_cameras": video_cameras(cfg)}
    stages = {**old, **(copied or {}),
              **{s: {"arm": record["arm"], "dataset": str(cfg.train.dataset)} for s in trained}}
    path.write_text(json.dumps({**record, "stages": stages}, indent=2))


def init_from(source: str | Path, cfg: SofConfig, stages: tuple[str, ...]) -> SofConfig:
    """`--init-from`: copy another checkpoint's video stages (Stage 1-2 weights, trained on any arm's
    videos) into cfg.train.out, with the config sections that shape them (flow, skill, policy), so
    that Stage 3 (and any head) trains for this config's arm and dataset on top of them."""
    import shutil

    from sof_ros.config import load_checkpoint_config
    from sof_ros.sim import embodiment

    source = Path(source)
    src_cfg = load_checkpoint_config(source)
    redo = [s for s in stages if s in VIDEO_STAGES]
    if redo:
        raise SofError(f"--init-from {source} copies the video stages; do not also train {', '.join(redo)} "
                       "(train them from scratch without --init-from)")
    if not (source / "skill.pt").is_file():
        raise SofError(f"{source} has no skill.pt: --init-from needs a checkpoint with Stage 1 "
                       "(sof-train --stage skill policy)")
    out = Path(cfg.train.out)
    if out.resolve() == source.resolve():
        raise SofError("--init-from and --out are the same directory; give a new --out for the new arm")
    cfg.flow, cfg.skill, cfg.policy = src_cfg.flow, src_cfg.skill, src_cfg.policy
    out.mkdir(parents=True, exist_ok=True)
    src_record = json.loads((source / "embodiment.json").read_text()).get("stages", {}) \
        if (source / "embodiment.json").is_file() else {}
    copied = {}
    for s in VIDEO_STAGES:
        if (source / f"{s}.pt").is_file():
            shutil.copy(source / f"{s}.pt", out / f"{s}.pt")
            (out / f"{s}.ckpt").unlink(missing_ok=True)
            copied[s] = {**src_record.get(s, {"arm": embodiment(src_cfg.sim), "dataset": str(src_cfg.train.dataset)}),
                         "copied_from": str(source)}
    if is_main():
        write_embodiment(out, cfg, (), copied)
    return cfg


def deep_update(old: dict, new: dict) -> dict:
    """`old` with `new` merged in at every depth: training one stage keeps what earlier runs recorded
    for the others (a shallow update dropped the f2a/bc/skill2action entries under "actions")."""
    out = dict(old)
    for k, v in new.items():
        out[k] = deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def token_sharing(d: SegmentData, seed: int = 0) -> dict:
    """How many first-token ids appear in more than one task (shared motion primitives), beside chance:
    the same count with the task labels of whole episodes shuffled (token frequencies and their runs
    within an episode kept, any link between token and task broken)."""
    eps = [(e.task, d.tokens[e.start: e.start + e.length - 1, 0].tolist()) for e in d.episodes if not e.is_val]

    def count(labels):
        tasks_per_token: dict[int, set] = {}
        for task, (_, toks) in zip(labels, eps):
            for t in toks:
                tasks_per_token.setdefault(t, set()).add(task)
        n_tasks = [len(v) for v in tasks_per_token.values()]
        return len(tasks_per_token), sum(n > 1 for n in n_tasks), float(np.mean(n_tasks)) if n_tasks else 0.0

    used, shared, mean_tasks = count([t for t, _ in eps])
    rng = np.random.default_rng(seed)
    chance = [count(list(rng.permutation([t for t, _ in eps])))[1:] for _ in range(5)]
    return {"first_token_ids_used": used, "shared_across_tasks": shared, "mean_tasks_per_id": mean_tasks,
            "chance_shared_across_tasks": float(np.mean([c[0] for c in chance])),
            "chance_mean_tasks_per_id": float(np.mean([c[1] for c in chance]))}


def train(cfg: SofConfig, stages=STAGES, device: str = "cpu", progress: bool = True) -> Trainer:
    trainer = Trainer(cfg, device, progress)
    for stage in stages:
        getattr(trainer, f"train_{stage}")()
    trainer.finish()
    return trainer


FLOW_CHAIN = ("skill", "policy", "f2a", "f2a_plan_only", "skill2action")  # each needs the ones before it


def train_parallel(a, cfg: SofConfig, stages: tuple[str, ...]) -> None:
    """`--jobs 2`: the flow-skill chain in one process, the stages that do not depend on it (BC, the
    pixel-space ablation) in another; the dataset tensors are cached first so both load them in seconds."""
    import subprocess

    groups = [[s for s in stages if s in FLOW_CHAIN], [s for s in stages if s not in FLOW_CHAIN]]
    groups = [g for g in groups if g]
    if cfg.train.cache:  # build the cache once, here, instead of twice at the same time
        segment_data(cfg)
    base = [sys.executable, "-m", "sof_ros.train", "--config", a.config, "--out", cfg.train.out,
            "--dataset", cfg.train.dataset] + (["--device", a.device] if a.device else [])
    Path(cfg.train.out).mkdir(parents=True, exist_ok=True)
    procs = []
    for i, group in enumerate(groups):
        log = open(Path(cfg.train.out) / f"train_job{i}.log", "w")
        procs.append((subprocess.Popen(base + ["--stage", *group], stdout=log, stderr=subprocess.STDOUT), group))
        print(f"job {i}: {' '.join(group)} (log: {log.name})")
    failed = [g for proc, g in procs if proc.wait() != 0]
    if failed:
        raise SofError(f"training of {', '.join(' '.join(g) for g in failed)} failed; see train_job*.log in "
                       f"{cfg.train.out} (re-running resumes from the last checkpoint)")


def main(argv=None):
    def body():
        p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--config", help="YAML config (see config/metaworld.yaml)")
        p.add_argument("--stage", nargs="+", choices=("all",) + STAGES,
                       help="stages to train, in order (later stages load earlier ones from --out)")
        p.add_argument("--rows", nargs="+", help="train the stages these policy rows need (default: the "
                       "config's eval.rows); e.g. --rows sof bc")
        p.add_argument("--dataset", help="override train.dataset")
        p.add_argument("--out", help="override train.out")
        p.add_argument("--device", help="cpu | cuda | cuda:N (override train.device)")
        p.add_argument("--jobs", type=int, default=1, help="2: train the flow-skill stages and the rest (BC, "
                       "pixel skills) in two processes at once, one thread each (train.num_threads)")
        p.add_argument("--init-from", metavar="CHECKPOINT", help="start from CHECKPOINT's Stages 1-2 (skill, "
                       "policy: learned from any arm's videos), copied into --out with their config sections; "
                       "train the arm's own stages on top, e.g. --stage f2a (docs/transfer.md)")
        a = p.parse_args(argv)
        cfg = load_config(a.config)
        if a.dataset:
            cfg.train.dataset = a.dataset
        if a.out:
            cfg.train.out = a.out
        device = a.device or cfg.train.device
        if a.stage and a.rows:
            raise SofError("give --stage or --rows, not both")
        if a.stage:
            stages = STAGES if "all" in a.stage else tuple(a.stage)
        else:
            stages = stages_for(a.rows or cfg.eval.rows)
        if a.init_from:
            if a.jobs > 1:
                raise SofError("--init-from trains in one process; drop --jobs")
            stages = tuple(s for s in stages if not (a.rows and s in VIDEO_STAGES))  # --rows: the heads only
            cfg = init_from(a.init_from, cfg, stages)
        t0 = time.time()
        if a.jobs > 1:
            train_parallel(a, cfg, stages)
            print(f"trained {' '.join(stages)} in {time.time() - t0:.0f} s (2 processes) -> {cfg.train.out}")
            return
        trainer = train(cfg, stages, device)
        if is_main():
            print(json.dumps(trainer.metrics, indent=2))
            print(f"trained {' '.join(stages)} in {time.time() - t0:.0f} s -> {cfg.train.out}")
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()

    run_cli(body)


if __name__ == "__main__":
    main()
