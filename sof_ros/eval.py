"""`sof-eval`: closed-loop MetaWorld rollouts (in process, no ROS) on held-out seeds.

Rows: sof (learned Flow2Action), sof_learning_free (geometric solver), skill2action (tokens straight
to actions), bc (image + instruction -> actions), pixel_skills (tokens of future frames instead of flow,
actions by inverse dynamics on the decoded frames), expert (MetaWorld's scripted policy, upper bound).
Writes JSON, a markdown table and a bar plot.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sof_ros.bench.meta import command_line, git_commit, machine
from sof_ros.config import SimConfig, load_config
from sof_ros.errors import SofError, run_cli
from sof_ros.policies import ROWS

# Quoted from the project issue that cites the paper (arXiv 2512.20052); not measured here.
PAPER_REFERENCE = {"sof_average_success": 0.69, "flow2action": 0.49, "skill2action": "0.15-0.21"}


def rollout(arm, seed: int, max_steps: int, policy, instruction: str | None = None):
    """One episode; returns (success, steps, per-step latencies in ms, per-plan latencies in ms).

    A control step that re-plans costs a full plan (for SOF: Transformer + decoder + head); the
    others only index the plan."""
    obs = arm.reset(seed)
    policy.reset()
    latencies, plan_latencies, plan = [], [], None
    k = policy.replan_every
    for step in range(max_steps):
        t0 = time.perf_counter()
        inp = obs.agent_input()
        if step % k == 0:
            plan = policy.plan(inp, instruction or arm.instruction)
            plan_latencies.append((time.perf_counter() - t0) * 1e3)
        action = policy.act(plan, inp, step % k)
        latencies.append((time.perf_counter() - t0) * 1e3)
        obs = arm.step(action)
        if obs.success:
            return True, step + 1, latencies, plan_latencies
    return False, max_steps, latencies, plan_latencies


def _run_task(job: dict) -> dict:
    """All seeds of one (row, task): the unit of work a worker process takes."""
    from sof_ros.policies import load_policy
    from sof_ros.sim.metaworld_env import MetaWorldArm

    torch.set_num_threads(1)  # small models: one thread is as fast and immune to contention
    row, task = job["row"], job["task"]
    policy = load_policy(row, job["checkpoint"], job["device"], job["replan_every"], task=task)
    arm = MetaWorldArm(task, job["sim"])
    out = {"row": row, "task": arm.task, "asked": task, "wins": 0, "ep_times": [], "lat": [], "plan_lat": []}
    try:
        for seed in job["seeds"]:
            t0 = time.time()
            ok, _, lat, plat = rollout(arm, seed, job["max_steps"], policy)
            out["ep_times"].append(time.time() - t0)
            out["wins"] += int(ok)
            out["lat"].extend(lat)
            out["plan_lat"].extend(plat)
    finally:
        arm.close()
    if row == "expert":  # privileged state, no inference worth timing
        out["lat"], out["plan_lat"] = [], []
    return out


def evaluate(checkpoint: str | None, rows: list[str], tasks: list[str], episodes: int, first_seed: int,
             max_steps: int, sim: SimConfig, device: str = "cpu", replan_every: int | None = None,
             progress: bool = True, workers: int = 1) -> dict:
    """Rollouts per (row, task); `workers` > 1 runs them in that many processes (one thread each)."""
    from sof_ros.policies import load_policy, row_spec

    for row in rows:
        row_spec(row)
    if workers < 1:
        raise SofError(f"--workers must be >= 1, got {workers}")
    for row in dict.fromkeys(rows):  # a missing stage fails here, clearly, not in a worker
        load_policy(row, checkpoint, device, task=tasks[0] if tasks else None)
    seeds = list(range(first_seed, first_seed + episodes))
    jobs = [dict(row=r, task=t, checkpoint=checkpoint, device=device, replan_every=replan_every, sim=sim,
                 seeds=seeds, max_steps=max_steps) for r in rows for t in tasks]
    bar = tqdm(total=len(jobs), desc="eval (row, task)", disable=not progress)
    done = []
    if workers == 1:
        for job in jobs:
            done.append(_run_task(job))
            bar.update(1)
            bar.set_postfix(row=job["row"], task=job["task"], wins=done[-1]["wins"])
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            for fut in as_completed([pool.submit(_run_task, j) for j in jobs]):
                done.append(fut.result())
                bar.update(1)
                bar.set_postfix(row=done[-1]["row"], task=done[-1]["task"], wins=done[-1]["wins"])
    bar.close()
    results = {"episodes_per_task": episodes, "seeds": seeds, "max_steps": max_steps, "workers": workers,
               "rows": {}}
    for row in rows:
        by_asked = {d["asked"]: d for d in done if d["row"] == row}  # workers finish in any order
        mine = {by_asked[t]["task"]: by_asked[t] for t in tasks}  # config order, simulator's spelling
        per_task = {t: d["wins"] / episodes for t, d in mine.items()}
        lat_all = [x for d in mine.values() for x in d["lat"]]
        plan_lat = [x for d in mine.values() for x in d["plan_lat"]]
        ep_times = [x for d in mine.values() for x in d["ep_times"]]
        entry = {"per_task": per_task, "average": float(np.mean(list(per_task.values()))),
                 "label": row_spec(row).label, "wall_s_per_episode": float(np.mean(ep_times))}
        if lat_all:
            entry["control_step_ms_p50"] = float(np.percentile(lat_all, 50))
            entry["control_step_ms_p95"] = float(np.percentile(lat_all, 95))
        if plan_lat:
            entry["replan_ms_p50"] = float(np.percentile(plan_lat, 50))
            entry["replan_ms_p95"] = float(np.percentile(plan_lat, 95))
        results["rows"][row] = entry
    return results


def markdown(results: dict) -> str:
    rows = results["rows"]
    tasks = list(next(iter(rows.values()))["per_task"])
    lines = [
        "# MetaWorld closed-loop success",
        "",
        f"- command: `{results['command']}`",
        f"- commit: `{results['commit']}`",
        f"- machine: {results['machine']}",
        f"- {results['episodes_per_task']} episodes per task, held-out seeds {results['seeds'][0]}..{results['seeds'][-1]}, "
        f"max {results['max_steps']} control steps",
        "",
        "| row | " + " | ".join(tasks) + " | average | s/episode |",
        "|---|" + "---|" * (len(tasks) + 2),
    ]
    for name, r in rows.items():
        cells = " | ".join(f"{r['per_task'][t]:.2f}" for t in tasks)
        lines.append(f"| {r.get('label', name)} | {cells} | **{r['average']:.2f}** | {r['wall_s_per_episode']:.1f} |")
    lines += ["", "Paper numbers (not measured here; quoted in the project issue from arXiv 2512.20052): "
              f"SOF average {PAPER_REFERENCE['sof_average_success']}, Flow2Action {PAPER_REFERENCE['flow2action']} "
              f"vs Skill2Action {PAPER_REFERENCE['skill2action']}."]
    lat = {n: r for n, r in rows.items() if "control_step_ms_p50" in r}
    if lat:
        lines += ["", "Agent inference on CPU (1 thread), excluding the simulator. A control step that re-plans runs "
                  "the skill policy, the decoder and the action head; the steps in between read the plan.", "",
                  "| row | control step p50 ms | p95 ms | re-plan p50 ms | re-plan p95 ms |", "|---|---|---|---|---|"]
        for n, r in lat.items():
            lines.append(f"| {n} | {r['control_step_ms_p50']:.2f} | {r['control_step_ms_p95']:.2f} | "
                         f"{r.get('replan_ms_p50', float('nan')):.2f} | {r.get('replan_ms_p95', float('nan')):.2f} |")
    return "\n".join(lines) + "\n"


def write_results(results: dict, out: Path) -> None:
    from sof_ros.learn.reports import success_bars

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    out.with_suffix(".md").write_text(markdown(results))
    success_bars(results["rows"], out.with_suffix(".png"),
                 f"MetaWorld success, {results['episodes_per_task']} held-out seeds per task")


def main(argv=None):
    def body():
        p = argparse.ArgumentParser(description=__doc__)
        p.add_argument("--checkpoint", default="models/sof_metaworld", help="trained checkpoint directory")
        p.add_argument("--config", help="YAML config (eval section)")
        p.add_argument("--rows", nargs="+", help=f"rows to run: {list(ROWS)}")
        p.add_argument("--tasks", nargs="+")
        p.add_argument("--episodes", type=int, help="episodes (held-out seeds) per task")
        p.add_argument("--first-seed", type=int)
        p.add_argument("--max-steps", type=int)
        p.add_argument("--replan-every", type=int)
        p.add_argument("--device", default="cpu")
        p.add_argument("--workers", type=int, default=1,
                       help="processes running (row, task) jobs in parallel, one thread each")
        p.add_argument("--out", default="benchmarks/results/metaworld.json")
        a = p.parse_args(argv)
        provenance = {"command": command_line(), "commit": git_commit(), "machine": machine()}  # code as started
        cfg = load_config(a.config)
        e = cfg.eval
        results = evaluate(a.checkpoint, a.rows or e.rows, a.tasks or e.tasks, a.episodes or e.episodes_per_task,
                           e.first_seed if a.first_seed is None else a.first_seed, a.max_steps or e.max_steps,
                           cfg.sim, a.device, a.replan_every, workers=a.workers)
        results = {**provenance, **results}
        write_results(results, Path(a.out))
        print(markdown(results))
        print(f"results: {a.out} (+ .md, .png)")

    run_cli(body)


if __name__ == "__main__":
    main()
