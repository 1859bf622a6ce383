"""One training loop for every stage: AdamW + cosine schedule, tqdm, metrics, resume, DDP.

Multi-GPU / multi-node goes through `torchrun` (DistributedDataParallel): each rank draws its
own batches, gradients are averaged by DDP, and only rank 0 writes logs and checkpoints.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm


def dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: str) -> str:
    """Join the torchrun process group when launched by torchrun; returns the device to use."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        use_cuda = device.startswith("cuda") and torch.cuda.is_available()
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        if use_cuda:
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            return f"cuda:{local}"
    return device


def is_main() -> bool:
    return dist_info()[0] == 0


def fit(name: str, model: nn.Module, loss_fn: Callable[[nn.Module, int], dict[str, torch.Tensor]],
        steps: int, out_dir: Path, lr: float, weight_decay: float, log_every: int = 100,
        ckpt_every: int = 500, progress: bool = True) -> list[dict]:
    """Minimise loss_fn(model, step)['loss']; resumes from out_dir/<name>.ckpt if present."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rank, world = dist_info()
    train_model = model
    if world > 1:
        train_model = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    warmup = min(100, max(1, steps // 10))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    ckpt_path = out_dir / f"{name}.ckpt"
    history: list[dict] = []
    start = 0
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        sched.load_state_dict(state["sched"])
        start = int(state["step"])
        hist_path = out_dir / f"{name}_history.json"
        if hist_path.exists():
            history = json.loads(hist_path.read_text())
    model.train()
    running: dict[str, float] = {}
    t0 = time.perf_counter()  # wall_s in the history: steps per second on this device (sof-bench train)
    bar = tqdm(range(start, steps), desc=name, initial=start, total=steps, disable=not (progress and rank == 0))
    for step in bar:
        metrics = loss_fn(train_model, step)
        opt.zero_grad(set_to_none=True)
        metrics["loss"].backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        for k, v in metrics.items():
            running[k] = running.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v)
        if (step + 1) % log_every == 0 or step + 1 == steps:
            n = (step % log_every) + 1
            row = {"step": step + 1, **{k: v / n for k, v in running.items()},
                   "wall_s": round(time.perf_counter() - t0, 4)}
            history.append(row)
            running = {}
            bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k not in ("step", "wall_s")})
        if rank == 0 and ((step + 1) % ckpt_every == 0 or step + 1 == steps):
            torch.save({"model": model.state_dict(), "optim": opt.state_dict(), "sched": sched.state_dict(),
                        "step": step + 1}, ckpt_path)
            (out_dir / f"{name}_history.json").write_text(json.dumps(history, indent=1))
    model.eval()
    return history
