"""`sof-bench train`: how long training takes per stage, at a config's model sizes, on a device.

Trains every stage the config's rows need for `--steps` optimiser steps each, into a fresh output
directory, from the dataset given, and reports per stage:
- seconds per optimiser step in steady state (the clock between the history rows after `--warmup`
  steps and the last one; the first steps carry CUDA's kernel selection and the allocator's growth);
- the stage's whole wall time at that budget (Stage 1 includes encoding the token ids of every
  segment of the dataset once, and each stage its held-out diagnostics and plots);
- the config's own step budget times the steady seconds per step: a projection of the optimiser
  time of the real run, labelled as such (token encoding and diagnostics grow with the dataset).

    sof-bench train --config config/metaworld.yaml --dataset data/mw2 --device cuda --steps 100

Every number comes from the run it is written by; the dataset's size is recorded beside them.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from sof_ros.errors import SofError

def steady_seconds_per_step(history: list[dict], warmup: int) -> float:
    """Seconds per step between the first history row at or after `warmup` steps and the last row."""
    rows = [r for r in history if "wall_s" in r]
    first = next((r for r in rows if r["step"] >= warmup), None)
    if first is None or rows[-1]["step"] == first["step"]:
        raise SofError(f"the history has no rows after {warmup} warm-up steps; use --steps well above --warmup")
    return (rows[-1]["wall_s"] - first["wall_s"]) / (rows[-1]["step"] - first["step"])


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(torch.device(device))} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    return f"CPU, {torch.get_num_threads()} torch thread(s) (torch {torch.__version__})"


def main(argv=None):
    from sof_ros.bench.meta import command_line, git_commit, machine
    from sof_ros.config import load_config
    from sof_ros.policies import stages_for
    from sof_ros.train import STAGES, STEP_BUDGET, Trainer

    p = argparse.ArgumentParser(prog="sof-bench train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML config whose model sizes are timed (config/metaworld.yaml)")
    p.add_argument("--dataset", help="dataset with flow at the config's gap (default: the config's train.dataset)")
    p.add_argument("--stages", nargs="+", choices=STAGES, help="default: every stage of the config's eval.rows")
    p.add_argument("--steps", type=int, default=100, help="optimiser steps per stage")
    p.add_argument("--warmup", type=int, default=20, help="steps left out of the steady seconds per step")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--work", help="output directory of the short training (default: a temporary one)")
    p.add_argument("--out", default="benchmarks/results/train_speed.json", help="results .json (a .md beside it)")
    p.add_argument("--note", default="", help="a sentence on how this run differs from a plain one, kept in the results")
    a = p.parse_args(argv)
    if a.warmup < 0 or a.steps < a.warmup + 10:
        raise SofError(f"--steps ({a.steps}) must exceed --warmup ({a.warmup}) by at least 10 steps")
    cfg = load_config(a.config)
    if a.dataset:
        cfg.train.dataset = a.dataset
    if not Path(cfg.train.dataset).is_dir():
        raise SofError(f"dataset {cfg.train.dataset} does not exist; pass --dataset DIR (sof-collect, then sof-flow)")
    budgets = {k: getattr(cfg.train, k) for k in set(STEP_BUDGET.values())}
    for k in budgets:
        setattr(cfg.train, k, a.steps)
    log_every = 5 if a.warmup % 5 == 0 else 1
    cfg.train.log_every, cfg.train.ckpt_every = log_every, a.steps
    stages = tuple(a.stages) if a.stages else stages_for(cfg.eval.rows)
    provenance = {"command": command_line(), "commit": git_commit(), "machine": machine()}
    with tempfile.TemporaryDirectory() as tmp:
        cfg.train.out = a.work or str(Path(tmp) / "run")
        if a.work and Path(a.work).exists() and any(Path(a.work).iterdir()):
            raise SofError(f"--work {a.work} is not empty; a resumed stage would not be timed from its start")
        t0 = time.perf_counter()
        trainer = Trainer(cfg, a.device)
        load_s = time.perf_counter() - t0
        rows = {}
        for stage in stages:
            t0 = time.perf_counter()
            getattr(trainer, f"train_{stage}")()
            wall = time.perf_counter() - t0
            hist = trainer.histories[stage]
            sps = steady_seconds_per_step(hist, a.warmup)
            budget = budgets[STEP_BUDGET[stage]]
            rows[stage] = {"seconds_per_step": round(sps, 5), "stage_wall_s": round(wall, 2),
                           "config_steps": budget, "projected_optimiser_s_at_config_steps": round(sps * budget, 1),
                           "first_loss": hist[0]["loss"], "last_loss": hist[-1]["loss"]}
            print(f"{stage:14s} {sps * 1e3:8.1f} ms/step  stage {wall:7.1f} s  ({budget} steps -> {sps * budget:.0f} s)")
        d = trainer.data
    result = {**provenance, "device": a.device, "device_name": device_name(a.device), "config": a.config,
              "dataset": {"path": cfg.train.dataset, "episodes": len(d.episodes), "frames": int(len(d.rgb))},
              "batch_size": cfg.train.batch_size, "num_threads": cfg.train.num_threads, "steps": a.steps,
              "warmup": a.warmup, "dataset_load_s": round(load_s, 2),
              "load_avg_1min_end": round(os.getloadavg()[0], 2), "note": a.note, "stages": rows}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(markdown(result))
    print(f"wrote {out} and {out.with_suffix('.md')}")


def markdown(r: dict) -> str:
    from sof_ros.bench.meta import markdown_header

    lines = markdown_header("Training speed per stage", r) + [
        f"- device: {r['device_name']}",
        f"- config: `{r['config']}` (batch {r['batch_size']}, {r['num_threads']} CPU thread(s)); dataset "
        f"`{r['dataset']['path']}`: {r['dataset']['episodes']} episodes, {r['dataset']['frames']} frames with padding "
        f"(loaded in {r['dataset_load_s']} s)",
        f"- {r['steps']} optimiser steps per stage; seconds per step over the steps after the first {r['warmup']}; "
        f"1-minute load average at the end: {r['load_avg_1min_end']}",
        *([f"- note: {r['note']}"] if r.get("note") else []),
        "", "| stage | ms per step | stage wall at this budget, s | config's steps | projected optimiser time at the "
        "config's steps, s | loss first -> last logged |", "|---|---|---|---|---|---|"]
    for stage, v in r["stages"].items():
        lines.append(f"| {stage} | {v['seconds_per_step'] * 1e3:.1f} | {v['stage_wall_s']:.1f} | {v['config_steps']} | "
                     f"{v['projected_optimiser_s_at_config_steps']:.0f} | {v['first_loss']:.4g} -> {v['last_loss']:.4g} |")
    lines += ["", "Stage wall time includes what a stage does once besides its steps (Stage 1: encoding every "
              "segment's tokens; each stage: its held-out diagnostics and plots), which grows with the dataset; "
              "the projection covers the optimiser steps only."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
