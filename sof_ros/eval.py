"""`sof-eval`: closed-loop MetaWorld rollouts (in process, no ROS) on held-out seeds, on the
protocol of AVDC and SOF: every task seen from every camera (corner, corner2, corner3), MetaWorld's
500-step limit, the score is the mean over task x camera, with a 95% confidence interval.

The protocol (tasks, cameras, steps, resolution, seeds) is read from the checkpoint's config.yaml,
then from `--config`, then from the flags, so a quick look and the table cannot silently differ.

An evaluation lives in a work directory (`--work`): its protocol is fixed there, every finished
episode is appended to `episodes/<row>/<task>/<camera>.jsonl` with the commit and machine that ran
it, and a re-run skips what is done, so an interrupted run loses at most the episodes in flight (and
a row finished by several runs says which code ran its episodes). `--shard i/n` runs every n-th
(row, task, camera) job; any invocation merges everything the work directory holds for the
protocol into the results file (JSON, markdown, bar plot with CIs); `--merge-only` just merges.
`--combine A.json B.json` puts the rows of results files of one protocol into one table, each row
with the command and commit that measured it; with `--rows`, only those rows.
`--paired WORK:ROW WORK:ROW` compares two rows on the episodes both ran (same task, camera and
seed): how many only one of them solves, and the exact two-sided McNemar p-value.

Rows are the policies of sof_ros.policies.ROWS (sof, sof_learning_free, skill2action, bc,
pixel_skills, expert, ...).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sof_ros.bench.meta import command_line, git_commit, machine, markdown_header, short_commit
from sof_ros.config import SofConfig, load_checkpoint_config, load_config
from sof_ros.errors import SofError, run_cli
from sof_ros.policies import ROWS

# Quoted from the project issue that cites the paper (arXiv 2512.20052); not measured here.
PAPER_REFERENCE = {"sof_average_success": 0.69, "flow2action": 0.49, "skill2action": "0.15-0.21"}


# --- statistics -------------------------------------------------------------------------------
def wilson_ci(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate (well-behaved at 0 and 1, unlike mean +- 2 SE)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def tied(a: dict, b: dict) -> bool:
    """Two rows are tied when each one's mean lies inside the other's 95% interval."""
    return (b["ci95"][0] <= a["average"] <= b["ci95"][1]) and (a["ci95"][0] <= b["average"] <= a["ci95"][1])


# --- rollouts ---------------------------------------------------------------------------------
def rollout(arm, seed: int, max_steps: int, policy, instruction: str | None = None, on_step=None):
    """One episode; returns (success, steps, per-step latencies in ms, per-plan latencies in ms).

    A control step that re-plans costs a full plan (for SOF: Transformer + decoder + head); the
    others only index the plan. `on_step(step, obs)`, if given, sees each observation the step led
    to (diagnostics such as scripts/trace_knob.py), outside the timed part."""
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
        if on_step is not None:
            on_step(step, obs)
        if obs.success:
            return True, step + 1, latencies, plan_latencies
    return False, max_steps, latencies, plan_latencies


def _episode_file(work: Path, row: str, task: str, camera: str) -> Path:
    return work / "episodes" / row / task / f"{camera}.jsonl"


def read_episodes(path: Path) -> dict[int, dict]:
    """Finished episodes of one (row, task, camera) by seed; a line cut off by a crash is ignored."""
    out = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            out[int(rec["seed"])] = rec
    return out


def episode_successes(work: str | Path, row: str) -> dict[tuple[str, str, int], bool]:
    """Every finished episode of `row` in a work directory, keyed by (task, camera, seed)."""
    root = Path(work) / "episodes" / row
    if not root.is_dir():
        raise SofError(f"{work} holds no episodes of row '{row}' (no {root}); name a work directory "
                       "and a row that sof-eval ran there")
    return {(f.parent.name, f.stem, seed): bool(rec["success"])
            for f in sorted(root.glob("*/*.jsonl")) for seed, rec in read_episodes(f).items()}


def paired(a: dict[tuple, bool], b: dict[tuple, bool]) -> dict:
    """Two rows on the episodes both ran: successes, the episodes only one solves, and the exact
    two-sided McNemar p-value (binomial test on the discordant pairs)."""
    shared = sorted(set(a) & set(b))
    if not shared:
        raise SofError("the two rows share no episode (task, camera, seed); compare runs of one protocol")
    only_a = sum(a[k] and not b[k] for k in shared)
    only_b = sum(b[k] and not a[k] for k in shared)
    n = only_a + only_b
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2 ** n if n else 0.5
    return {"episodes": len(shared), "successes_a": sum(a[k] for k in shared), "successes_b": sum(b[k] for k in shared),
            "only_a": only_a, "only_b": only_b, "mcnemar_p": min(1.0, 2 * tail)}


def _run_job(job: dict) -> dict:
    """The seeds of one (row, task, camera) not yet in its episode file: the unit a worker takes."""
    from sof_ros.policies import load_policy
    from sof_ros.sim import make_arm

    torch.set_num_threads(1)  # small models: one thread is as fast and immune to contention
    path = Path(job["file"])
    todo = [s for s in job["seeds"] if s not in read_episodes(path)]
    if not todo:
        return {**job, "ran": 0}
    policy = load_policy(job["row"], job["checkpoint"], job["device"], job["replan_every"], task=job["task"],
                         eval_cfg=job["eval"], solver=job["solver"])
    arm = make_arm(job["task"], job["sim"], camera=job["camera"],
                   with_depth=job["row"] not in ROWS or ROWS[job["row"]].needs_depth)  # RGB-only rows skip 2/3 of the rendering
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        for seed in todo:
            t0 = time.time()
            ok, steps, lat, plat = rollout(arm, seed, job["max_steps"], policy)
            rec = {"seed": seed, "success": bool(ok), "steps": steps, "wall_s": round(time.time() - t0, 3),
                   "commit": job["commit"], "machine": job["machine"]}
            if job["row"] != "expert":  # privileged state: no inference worth timing
                rec["step_ms"] = [round(x, 3) for x in lat]
                rec["plan_ms"] = [round(x, 3) for x in plat]
            with open(path, "a") as f:  # one line per finished episode: a crash loses only the one in flight
                f.write(json.dumps(rec) + "\n")
    finally:
        arm.close()
    return {**job, "ran": len(todo)}


# --- protocol / work directory ----------------------------------------------------------------
def protocol_of(cfg: SofConfig, replan_every: int | None = None, solver: dict | None = None) -> dict:
    """What every episode of an evaluation shares; replan_every is the --replan-every override (None:
    each checkpoint's own eval.replan_every, recorded as 0); solver the --solver overrides of the
    learning-free rows, recorded only when there are some."""
    e = cfg.eval
    protocol = {"tasks": list(e.tasks), "cameras": list(e.cameras), "max_steps": int(e.max_steps),
                "episodes_per_task_camera": int(e.episodes_per_task_camera), "first_seed": int(e.first_seed),
                "resolution": [int(cfg.sim.width), int(cfg.sim.height)], "replan_every": int(replan_every or 0),
                "antialias": bool(cfg.sim.antialias)}  # frames rendered as the checkpoint's training frames were
    if int(e.plan_samples) != 1:  # the learning-free row's plan is the medoid of several
        protocol["plan_samples"] = [int(e.plan_samples), float(e.plan_sample_temperature)]
    if float(e.ensemble) > 0:  # the learned rows average their overlapping action chunks
        protocol["ensemble"] = float(e.ensemble)
    if float(e.plan_flow_scale) != 1.0:  # the learning-free row reads its predicted plans scaled
        protocol["plan_flow_scale"] = float(e.plan_flow_scale)
    return {**protocol, "solver": dict(sorted(solver.items()))} if solver else protocol


_FIXED = ("max_steps", "first_seed", "resolution", "replan_every", "solver", "antialias", "plan_samples",
          "ensemble", "plan_flow_scale")  # what every episode of one work directory must share
# fixed in a work directory, but rows of several checkpoints (antialias) or runs (the learning-free
# rows' solver settings) may differ in a combined table: each row carries its own
_PER_ROW = ("antialias", "solver")
_ABSENT = {"replan_every": 0, "solver": {}, "plan_samples": [1, 0.0], "ensemble": 0.0, "plan_flow_scale": 1.0}  # a protocol without the key (older files; no override) means this
_COMPARED_WHEN_ABSENT = ("solver", "plan_samples", "ensemble", "plan_flow_scale")  # recorded only when not the default, so a missing key is the default
RUN_SETTINGS = ("replan_every", "solver", "plan_samples", "ensemble", "plan_flow_scale")  # how the policies ran


def reads_solver(row: str) -> bool:
    """The rows `--solver` reaches: the learning-free ones, which run the geometric solver."""
    return row in ROWS and getattr(ROWS[row].cls(), "reads_solver", False)


def settings_words(pr: dict) -> str:
    """The protocol's run settings that are not the defaults, as clauses of a results table's protocol
    line (sof-eval's and sof-bench libero's)."""
    return ((f"re-planning every {pr['replan_every']} control steps; " if pr.get("replan_every") else "")
            + ("learning-free solver settings " + ", ".join(f"{k}={v}" for k, v in pr["solver"].items()) + "; "
               if pr.get("solver") else "")
            + (f"learning-free plan = medoid of {pr['plan_samples'][0]} plans (greedy + sampled at temperature "
               f"{pr['plan_samples'][1]:g}); " if pr.get("plan_samples") else "")
            + (f"learned rows average their overlapping action chunks (temporal ensembling, weight "
               f"exp(-{pr['ensemble']:g} x age in plans)); " if pr.get("ensemble") else "")
            + (f"learning-free row reads its predicted plans at {pr['plan_flow_scale']:g}x their motion; "
               if pr.get("plan_flow_scale") else ""))


def require_at_least_one(flags: dict) -> None:
    """Command-line counts that must be >= 1 when given (0 used to fall back to the default silently)."""
    for flag, value in flags.items():
        if value is not None and value < 1:
            raise SofError(f"{flag} must be at least 1, got {value}; leave it out for the protocol's own")


def solver_overrides(items: list[str] | None) -> dict:
    """--solver KEY=VALUE ... -> keyword arguments of the geometric solver (values read as YAML:
    numbers, words, true/false), each checked by building a solver with them."""
    import inspect

    import yaml

    from sof_ros.flow2action.geometric import GeometricFlow2Action

    known = [k for k in inspect.signature(GeometricFlow2Action.__init__).parameters if k != "self"]
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or key not in known:
            raise SofError(f"--solver takes KEY=VALUE with KEY a setting of the geometric solver, got '{item}'; "
                           f"settings: {', '.join(known)}")
        out[key] = yaml.safe_load(value)
    GeometricFlow2Action(**out)  # a bad value is named here, by the solver's own checks
    return out


def _protocol_value(protocol: dict, key: str):
    """The protocol's value for `key`; a file that lacks the key (older, or no override) means _ABSENT's."""
    return protocol.get(key, _ABSENT.get(key, 0))


def open_work(work: Path, protocol: dict) -> dict:
    """The work directory's protocol (created on first use); a run with another protocol is refused.
    Shards started together read and extend it one at a time (a file lock), and it is replaced
    whole, so none reads a half-written file or drops another's tasks."""
    import fcntl
    import os

    work.mkdir(parents=True, exist_ok=True)
    with open(work / ".protocol.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        protocol = _extend_protocol(work / "protocol.json", protocol)
        tmp = work / f".protocol.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(protocol, indent=1))
        os.replace(tmp, work / "protocol.json")
    return protocol


def _extend_protocol(path: Path, protocol: dict) -> dict:
    if path.is_file():
        stored = json.loads(path.read_text())
        # (work directories from before replan_every was recorded lack it: not compared there; a
        # missing solver, plan_samples, ensemble or plan_flow_scale is the default, so those are compared)
        clash = {k: (_protocol_value(stored, k), _protocol_value(protocol, k)) for k in _FIXED
                 if (k in stored or k in _COMPARED_WHEN_ABSENT) and _protocol_value(stored, k) != _protocol_value(protocol, k)}
        if clash:
            raise SofError(f"{path.parent} holds an evaluation with another protocol ({clash}, stored vs asked); "
                           "use another --work directory for a different protocol")
        # tasks/cameras/episodes may grow across invocations (shards, extra rows): keep the union
        for k in ("tasks", "cameras"):
            stored[k] = list(dict.fromkeys(stored[k] + protocol[k]))
        stored["episodes_per_task_camera"] = max(stored["episodes_per_task_camera"],
                                                 protocol["episodes_per_task_camera"])
        protocol = stored
    return protocol


def evaluate(checkpoint: str | None, rows: list[str], cfg: SofConfig, work: str | Path, device: str = "cpu",
             replan_every: int | None = None, progress: bool = True, workers: int = 1, shard: tuple[int, int] = (0, 1),
             episodes: int | None = None, solver: dict | None = None, started=None) -> dict:
    """Run what is missing of rows x tasks x cameras x seeds in `work`, then merge it all. `solver`:
    settings of the learning-free rows' geometric solver (sof-eval --solver), part of the protocol.
    `started()` is called once rows and protocol are checked, before the first episode."""
    from sof_ros.policies import load_policy, row_spec

    for row in rows:
        row_spec(row)
    solver = dict(solver or {})
    if solver and not any(reads_solver(r) for r in rows):
        raise SofError("--solver sets the geometric solver of the learning-free rows; none of them is in --rows")
    if workers < 1:
        raise SofError(f"--workers must be >= 1, got {workers}")
    e = cfg.eval
    if not e.tasks or not e.cameras:
        raise SofError("the protocol needs at least one task and one camera (eval.tasks, eval.cameras)")
    from sof_ros.sim import make_arm

    for cam in e.cameras:  # a typo'd camera fails here, not in a worker an hour later
        make_arm(e.tasks[0], cfg.sim, camera=cam).close()
    solver_of = {row: solver if reads_solver(row) else None for row in rows}  # --solver reaches the solver rows
    for row in solver_of:  # a missing stage fails here, clearly, not in a worker
        load_policy(row, checkpoint, device, task=e.tasks[0], eval_cfg=e, solver=solver_of[row])
    if replan_every is None and checkpoint and e.replan_every != eval_config(checkpoint, None).eval.replan_every:
        replan_every = e.replan_every  # a config changed the checkpoint's interval: an override, recorded as one
    work = Path(work)
    protocol = open_work(work, protocol_of(cfg, replan_every, solver))
    n = int(episodes or e.episodes_per_task_camera)
    seeds = list(range(e.first_seed, e.first_seed + n))
    code = {"commit": git_commit(), "machine": machine()}  # as started: each episode record carries it
    jobs = [dict(row=r, task=t, camera=c, checkpoint=checkpoint, device=device, replan_every=replan_every,
                 solver=solver_of[r], sim=cfg.sim, eval=e, seeds=seeds, max_steps=e.max_steps,
                 file=str(_episode_file(work, r, t, c)), **code)
            for r in rows for t in e.tasks for c in e.cameras]
    i, n_shards = shard
    jobs = [j for k, j in enumerate(jobs) if k % n_shards == i]
    if started is not None:
        started()
    bar = tqdm(total=len(jobs), desc="eval (row, task, camera)", disable=not progress)

    def done(res):
        bar.update(1)
        bar.set_postfix(row=res["row"], task=res["task"], camera=res["camera"], ran=res["ran"])

    if workers == 1:
        for job in jobs:
            done(_run_job(job))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        from sof_ros.procs import worker_dies_with

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=worker_dies_with,
                                 initargs=(os.getpid(),)) as pool:
            for fut in as_completed([pool.submit(_run_job, j) for j in jobs]):
                done(fut.result())
    bar.close()
    return merge(work, protocol)


def merge(work: Path, protocol: dict | None = None) -> dict:
    """Every row found in `work`, over the protocol's tasks x cameras x seeds. A row with episodes
    missing for some cell is reported with `complete: false` and how many episodes it has."""
    work = Path(work)
    if protocol is None:
        path = work / "protocol.json"
        if not path.is_file():
            raise SofError(f"{work} holds no evaluation (no protocol.json); run sof-eval with --work {work}")
        protocol = json.loads(path.read_text())
    rows_dir = work / "episodes"
    present = sorted(p.name for p in rows_dir.iterdir()) if rows_dir.is_dir() else []
    order = [r for r in ROWS if r in present] + [r for r in present if r not in ROWS]
    results = {"protocol": protocol, "rows": {}}
    for row in order:
        entry = _row_summary(work, row, protocol)
        if entry is not None:
            results["rows"][row] = entry
    return results


UNRECORDED = "not recorded"  # episodes run before their records carried the code's commit and machine


def episodes_code(records: list[dict]) -> dict:
    """{"commits": {commit: episodes}, "machines": {machine: episodes}} of episode records: which code
    ran a row that several runs (resumed, sharded, other machines) finished."""
    out = {"commits": {}, "machines": {}}
    for rec in records:
        for key, field in (("commits", "commit"), ("machines", "machine")):
            value = rec.get(field, UNRECORDED)
            out[key][value] = out[key].get(value, 0) + 1
    return out


def code_words(result_commit: str, code: dict) -> str | None:
    """A row's episodes' commits in words when they are not just the results file's own commit."""
    commits = code.get("commits") or {}
    if not commits or list(commits) == [result_commit]:  # no "commits": a results file from before the stamp
        return None
    return ", ".join(f"`{short_commit(c)}` ({n})" if c != UNRECORDED else f"{c} ({n})" for c, n in commits.items())


def _row_summary(work: Path, row: str, protocol: dict) -> dict | None:
    first = protocol["first_seed"]
    per_cell, lat, plan_lat, wall = {}, [], [], []
    counts = []
    for task in protocol["tasks"]:
        for cam in protocol["cameras"]:
            recs = read_episodes(_episode_file(work, row, task, cam))
            recs = {s: r for s, r in recs.items() if s >= first}
            if not recs:
                continue
            counts.append(len(recs))
            per_cell[(task, cam)] = recs
            for r in recs.values():
                lat += r.get("step_ms", [])
                plan_lat += r.get("plan_ms", [])
                wall.append(r["wall_s"])
    if not per_cell:
        return None
    cells = len(protocol["tasks"]) * len(protocol["cameras"])
    n_eps = min(counts)
    # equal episodes per cell (the first n_eps seeds of each) so the pooled rate is the mean over task x camera
    firsts = {k: [r for _, r in sorted(v.items())[:n_eps]] for k, v in per_cell.items()}
    wins = {k: sum(r["success"] for r in v) for k, v in firsts.items()}
    total = n_eps * len(per_cell)
    succ = sum(wins.values())
    spec = ROWS.get(row)
    cams = protocol["cameras"]

    def rate(keys):
        keys = [k for k in keys if k in wins]
        return sum(wins[k] for k in keys), n_eps * len(keys)

    task_counts = {t: rate([(t, c) for c in cams]) for t in protocol["tasks"]}
    cam_counts = {c: rate([(t, c) for t in protocol["tasks"]]) for c in cams}
    entry = {
        "label": spec.label if spec else row,
        "per_task": {t: w / m for t, (w, m) in task_counts.items() if m},
        "per_task_ci95": {t: list(wilson_ci(w, m)) for t, (w, m) in task_counts.items() if m},
        "per_camera": {c: w / m for c, (w, m) in cam_counts.items() if m},
        "average": succ / total, "ci95": list(wilson_ci(succ, total)), "episodes": total,
        "episodes_per_task_camera": n_eps, "complete": len(per_cell) == cells,
        "wall_s_per_episode": float(np.mean(wall)),
        "antialias": protocol.get("antialias"),  # None: measured before the protocol recorded it
        **episodes_code([r for v in firsts.values() for r in v]),
    }
    if reads_solver(row):
        entry["solver"] = dict(protocol.get("solver") or {})
    if lat:
        entry["control_step_ms_p50"] = float(np.percentile(lat, 50))
        entry["control_step_ms_p95"] = float(np.percentile(lat, 95))
    if plan_lat:
        entry["replan_ms_p50"] = float(np.percentile(plan_lat, 50))
        entry["replan_ms_p95"] = float(np.percentile(plan_lat, 95))
    return entry


def combine(paths: list[str | Path], only: list[str] | None = None) -> dict:
    """The rows of several results files of one protocol in one table, each row keeping the command,
    commit and machine of the run that measured it (`provenance`): rows measured at different commits
    (a new solver, another row added later) are read side by side without pretending one run made
    them. Files of different protocols, or one row in two files, are refused. `only` keeps just those
    rows (a table whose row is replaced by a new run: combine it with `only` the rows it keeps, then
    with the new file); a row of `only` that no file holds is refused."""
    if not paths:
        raise SofError("--combine needs at least one results file")
    loaded = []
    for p in paths:
        p = Path(p)
        try:
            res = json.loads(p.read_text())
            res["protocol"], res["rows"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise SofError(f"{p} is not a sof-eval results file ({type(e).__name__}: {e}); pass the .json "
                           "that sof-eval --out wrote") from None
        loaded.append((p, res))
    ref_path, ref = loaded[0]
    shared = ("tasks", "cameras", *(k for k in _FIXED if k not in _PER_ROW))
    for p, res in loaded[1:]:
        clash = {k: (_protocol_value(ref["protocol"], k), _protocol_value(res["protocol"], k)) for k in shared
                 if _protocol_value(ref["protocol"], k) != _protocol_value(res["protocol"], k)}
        if clash:
            raise SofError(f"{p} was measured on another protocol than {ref_path} ({clash}); only rows of one "
                           "protocol share a table")
    rows = {}
    for p, res in loaded:
        for name, row in res["rows"].items():
            if only is not None and name not in only:
                continue
            if name in rows:
                raise SofError(f"row '{name}' is in {rows[name]['provenance']['file']} and in {p}; combine one of them")
            prov = row.get("provenance") or {k: res.get(k) for k in ("command", "commit", "machine")}
            rows[name] = {**row, "provenance": {**prov, "file": prov.get("file", p.name)}}
            if reads_solver(name) and "solver" not in row:  # a file from before rows carried it
                rows[name]["solver"] = dict(res["protocol"].get("solver") or {})
    missing = [r for r in only or [] if r not in rows]
    if missing:
        raise SofError(f"--rows {' '.join(missing)}: no such row in {', '.join(str(p) for p, _ in loaded)}; "
                       "name rows these files hold")
    order = [r for r in ROWS if r in rows] + [r for r in rows if r not in ROWS]
    protocol = {k: v for k, v in ref["protocol"].items() if k not in _PER_ROW}  # those are in each row
    protocol["episodes_per_task_camera"] = min(r["episodes_per_task_camera"] for r in rows.values())
    return {"protocol": protocol, "rows": {r: rows[r] for r in order}}


# --- reports ----------------------------------------------------------------------------------
def ties(rows: dict) -> list[str]:
    names = list(rows)
    return [f"{a} and {b}" for i, a in enumerate(names) for b in names[i + 1:] if tied(rows[a], rows[b])]


def _solver_words(solver: dict | None) -> str:
    if solver is None:
        return "-"  # not a learning-free row
    return ", ".join(f"{k}={v}" for k, v in solver.items()) if solver else "the row's defaults"


def markdown(results: dict) -> str:
    rows, pr = results["rows"], results["protocol"]
    tasks = pr["tasks"]
    lines = [
        *markdown_header("MetaWorld closed-loop success", results),
        f"- protocol: {len(tasks)} tasks x cameras {', '.join(pr['cameras'])}; held-out seeds from "
        f"{pr['first_seed']}; at most {pr['max_steps']} control steps; {pr['resolution'][0]}x{pr['resolution'][1]} "
        + {True: "antialiased ", False: "not antialiased "}.get(pr.get("antialias"), "") + "renders; "
        + settings_words(pr) + "score = mean over task x camera with its 95% Wilson interval",
        "",
        "| row | " + " | ".join(tasks) + " | average [95% CI] | episodes per task x camera | s/episode |",
        "|---|" + "---|" * (len(tasks) + 3),
    ]
    for name, r in rows.items():
        cells = " | ".join(f"{r['per_task'][t]:.2f}" if t in r["per_task"] else "-" for t in tasks)
        flag = "" if r["complete"] else " (incomplete)"
        lines.append(f"| {r['label']}{flag} | {cells} | **{r['average']:.2f}** [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}] "
                     f"| {r['episodes_per_task_camera']} | {r['wall_s_per_episode']:.1f} |")
    tie = ties(rows)
    lines += ["", "Tied (each mean inside the other's 95% interval): " + ("; ".join(tie) if tie else "none") + "."]
    lines += ["", "| row | " + " | ".join(pr["cameras"]) + " |", "|---|" + "---|" * len(pr["cameras"])]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{r['per_camera'].get(c, float('nan')):.2f}" for c in pr["cameras"]) + " |")
    measured = {n: r["provenance"] for n, r in rows.items() if "provenance" in r}
    if measured:
        aa = {True: "yes", False: "no", None: "not recorded"}
        lines += ["", "Where each row was measured (the command above combined their results files):", "",
                  "| row | commit | frames antialiased | learning-free solver settings | command |", "|---|---|---|---|---|"]
        lines += [f"| {n} | `{short_commit(p.get('commit') or '?')}` | {aa[rows[n].get('antialias')]} | "
                  f"{_solver_words(rows[n].get('solver'))} | `{p.get('command')}` |" for n, p in measured.items()]
    code = {n: code_words(r.get("provenance", results)["commit"], r) for n, r in rows.items()}
    code = {n: w for n, w in code.items() if w}
    if code:
        lines += ["", "Code that ran each row's episodes (commit: episodes), where it is not the commit above:", ""]
        lines += [f"- {n}: {w}" for n, w in code.items()]
    lines += ["", "Paper numbers (not measured here; quoted in the project issue from arXiv 2512.20052): "
              f"SOF average {PAPER_REFERENCE['sof_average_success']}, Flow2Action {PAPER_REFERENCE['flow2action']} "
              f"vs Skill2Action {PAPER_REFERENCE['skill2action']}."]
    lat = {n: r for n, r in rows.items() if "control_step_ms_p50" in r}
    if lat:
        lines += ["", "Policy inference on CPU (1 thread), excluding the simulator. A control step that re-plans runs "
                  "the whole plan (for SOF: skill policy, decoder and action head); the steps in between read the plan.",
                  "", "| row | control step p50 ms | p95 ms | re-plan p50 ms | re-plan p95 ms |", "|---|---|---|---|---|"]
        for n, r in lat.items():
            lines.append(f"| {n} | {r['control_step_ms_p50']:.2f} | {r['control_step_ms_p95']:.2f} | "
                         f"{r.get('replan_ms_p50', float('nan')):.2f} | {r.get('replan_ms_p95', float('nan')):.2f} |")
    return "\n".join(lines) + "\n"


def write_results(results: dict, out: Path) -> None:
    from sof_ros.learn.reports import success_bars

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    out.with_suffix(".md").write_text(markdown(results))
    pr = results["protocol"]
    success_bars(results["rows"], out.with_suffix(".png"),
                 f"MetaWorld success per task (mean over {len(pr['cameras'])} cameras), 95% CIs")


def results_path(out: str) -> str:
    """--out as the results file: a directory (existing, or written with a trailing /) gets
    metaworld.json inside it; anything else must end in .json. Checked before hours of episodes."""
    path = Path(out)
    if path.is_dir() or out.endswith(("/", "\\")):
        return str(path / "metaworld.json")
    if path.suffix != ".json":
        raise SofError(f"--out is the results file (.json, with .md and .png beside it) or a directory, got '{out}'")
    return out


def eval_config(checkpoint: str | None, config: str | None) -> SofConfig:
    """The checkpoint's own protocol, then the YAML file's keys on top (only those it sets)."""
    base = None
    if checkpoint and (Path(checkpoint) / "config.yaml").is_file():
        base = load_checkpoint_config(checkpoint)
    return load_config(config, base=base)


def main(argv=None):
    def body():
        p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--checkpoint", default="models/sof_metaworld", help="trained checkpoint directory")
        p.add_argument("--config", help="YAML whose eval/sim keys override the checkpoint's protocol")
        p.add_argument("--rows", nargs="+", help=f"rows to run: {list(ROWS)}; with --combine, the rows to keep")
        p.add_argument("--tasks", nargs="+")
        p.add_argument("--cameras", nargs="+", help="MetaWorld cameras (protocol: corner corner2 corner3)")
        p.add_argument("--episodes", type=int, help="held-out seeds per task and camera")
        p.add_argument("--first-seed", type=int)
        p.add_argument("--max-steps", type=int)
        p.add_argument("--replan-every", type=int)
        p.add_argument("--solver", nargs="+", metavar="KEY=VALUE",
                       help="learning-free rows: a setting of the geometric solver, e.g. held_motion=translation "
                            "(sof_ros/flow2action/geometric.py); recorded in the protocol")
        p.add_argument("--device", default="cpu")
        p.add_argument("--workers", type=int, default=1,
                       help="processes running (row, task, camera) jobs in parallel, one thread each")
        p.add_argument("--shard", default="0/1", help="i/n: run every n-th job starting at i (merge sees all)")
        p.add_argument("--work", default="runs/eval/metaworld", help="work directory (resumable episode records)")
        p.add_argument("--merge-only", action="store_true", help="merge what --work holds, run nothing")
        p.add_argument("--combine", nargs="+", metavar="RESULTS_JSON",
                       help="run nothing: put the rows of these results files (one protocol) into --out, "
                            "each row with the command and commit that measured it")
        p.add_argument("--paired", nargs=2, metavar="WORK:ROW",
                       help="run nothing: compare two rows of work directories on the episodes both ran "
                            "(only-one-solves counts, exact McNemar p)")
        p.add_argument("--out", default="benchmarks/results/metaworld.json")
        a = p.parse_args(argv)
        if a.paired:
            sides = []
            for spec in a.paired:
                work, sep, row = spec.rpartition(":")
                if not sep or not work or not row:
                    raise SofError(f"--paired takes WORK:ROW, e.g. runs/eval/metaworld:sof, got '{spec}'")
                sides.append(episode_successes(work, row))
            r = paired(*sides)
            print(f"{r['episodes']} shared episodes: A {a.paired[0]} {r['successes_a']}, B {a.paired[1]} "
                  f"{r['successes_b']}; only A {r['only_a']}, only B {r['only_b']}; exact McNemar p = {r['mcnemar_p']:.4f}")
            return
        a.out = results_path(a.out)
        provenance = {"command": command_line(), "commit": git_commit(), "machine": machine()}  # code as started
        if a.combine:
            results = combine(a.combine, a.rows)
        elif a.merge_only:
            results = merge(Path(a.work))
        else:
            require_at_least_one({"--episodes": a.episodes, "--max-steps": a.max_steps,
                                  "--replan-every": a.replan_every, "--workers": a.workers})
            solver = solver_overrides(a.solver)
            cfg = eval_config(a.checkpoint, a.config)
            e = cfg.eval
            for key in ("tasks", "cameras", "first_seed", "max_steps"):
                if getattr(a, key) is not None:
                    setattr(e, key, getattr(a, key))
            if a.episodes:
                e.episodes_per_task_camera = a.episodes
            try:
                i, n = (int(x) for x in a.shard.split("/"))
                assert 0 <= i < n
            except (ValueError, AssertionError):
                raise SofError(f"--shard must be i/n with 0 <= i < n, got '{a.shard}'") from None
            results = evaluate(a.checkpoint, a.rows or e.rows, cfg, a.work, a.device, a.replan_every,
                               workers=a.workers, shard=(i, n), solver=solver)
        if not results["rows"]:
            raise SofError(f"nothing to report: {a.work} holds no finished episodes")
        results = {**provenance, **results}
        write_results(results, Path(a.out))
        print(markdown(results))
        print(f"results: {a.out} (+ .md, .png); episode records: {a.work}")

    run_cli(body)


if __name__ == "__main__":
    main()
