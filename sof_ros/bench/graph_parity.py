"""`sof-bench graph`: the same episodes in process (`sof-eval`) and through the ROS graph.

The offline table is measured in one process: the policy plans and acts on the simulator's
observations directly. On a robot the loop runs as four nodes over DDS (sim bridge or arm, camera,
policy, Flow2Action), each with its own copy of the agent and its own view of the frame. This runs
the same held-out episodes both ways -- each graph episode is one `sof-bringup sim --until-done`,
lockstep, so the simulator waits for every command -- and reports the success of each, the episodes
on which they disagree, and the graph without a mask source (`object_mask_topic` and
`robot_mask_topic` empty: what a real robot without a segmentation node runs), the baseline that
shows what the masks carry. Results are resumable: every episode is one file under --work.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from sof_ros.errors import SofError

VARIANTS: dict[str, str] = {
    "in_process": "sof-eval's rollout: one process, the simulator's own observation",
    "graph": "sof-bringup sim: four node processes over DDS, masks from the sim bridge's segmentation",
    "graph_no_mask": "the graph without a mask source (object_mask_topic, robot_mask_topic empty)",
    "graph_hand_mask_only": "the graph with the hand's mask but no object mask (object_mask_topic empty): a robot that "
                            "renders its own links, without a segmenter",
}
NO_OBJECT_MASK = ["--param", "sof_flow2action.object_mask_topic=''"]
EXTRA_PARAMS = {"graph": [], "graph_no_mask": NO_OBJECT_MASK + ["--param", "sof_flow2action.robot_mask_topic=''"],
                "graph_hand_mask_only": NO_OBJECT_MASK}


def graph_episode(checkpoint: str, row: str, task: str, seed: int, max_steps: int, rate_hz: float, seconds: float,
                  out: Path, extra: list[str]) -> dict:
    """One episode through `sof-bringup sim` as separate processes; the record written to `out`."""
    d = out.parent / out.stem
    d.mkdir(parents=True, exist_ok=True)
    summary = d / "summary.json"
    rate = f"{rate_hz:.1f}"
    cmd = [sys.executable, "-m", "sof_ros.ros.bringup", "sim", "--task", task, "--until-done",
           "--seconds", str(seconds), "--checkpoint", checkpoint,
           "--param", f"sof_policy.agent.policy={row}", "--param", f"sof_flow2action.agent.policy={row}",
           "--param", f"sof_sim_bridge.seed={seed}", "--param", f"sof_sim_bridge.max_steps={max_steps}",
           "--param", f"sof_sim_bridge.rate_hz={rate}", "--param", f"sof_flow2action.robot.control_rate_hz={rate}",
           # 1 cm per action unit at rate_hz: full-scale actions on three axes are 0.017 * rate_hz m/s
           "--param", f"sof_flow2action.robot.max_linear_speed={0.02 * rate_hz:.2f}",
           "--param", "sof_sim_bridge.lockstep_timeout_s=1.0", *extra,
           "--summary", str(summary), "--log-dir", str(d / "logs")]
    from sof_ros.ros.bringup import node_popen

    env = dict(os.environ, ROS_HOME=str(d / "ros_home"))  # its own e-stop latch, not this machine's
    t0 = time.time()
    proc = node_popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # dies with this bench
    try:
        _, err = proc.communicate(timeout=seconds + 120)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    if not summary.is_file():
        raise SofError(f"sof-bringup wrote no summary for {task} seed {seed} (exit {proc.returncode}): "
                       f"{err.strip()[-500:]}; logs in {d / 'logs'}")
    s = json.loads(summary.read_text())
    steps = s.get("sim_steps")
    # steps: the count last seen by the monitor, which may trail the success message by one
    rec = {"seed": seed, "success": bool(s["success"]), "steps": steps, "wall_s": round(time.time() - t0, 1),
           # an episode cut off by --seconds before success or max_steps says nothing: not counted
           "complete": bool(s["success"]) or (steps is not None and steps >= max_steps),
           "died": s.get("died", {}), "last_status": s.get("last_status", "")}
    out.write_text(json.dumps(rec) + "\n")
    return rec


def rate_row(episodes: dict[str, dict[int, dict]]) -> dict:
    from sof_ros.eval import wilson_ci

    done = {t: [r for r in per.values() if r.get("complete", True)] for t, per in episodes.items()}
    wins = sum(r["success"] for recs in done.values() for r in recs)
    n = sum(len(recs) for recs in done.values())
    return {"successes": wins, "episodes": n, "average": round(wins / n, 4) if n else None,
            "ci95": [round(x, 4) for x in wilson_ci(wins, n)] if n else None,
            "incomplete": sum(len(per) for per in episodes.values()) - n,
            "per_task": {t: round(sum(r["success"] for r in recs) / max(1, len(recs)), 4) for t, recs in done.items()}}


def agreement(a: dict[str, dict[int, dict]], b: dict[str, dict[int, dict]]) -> dict:
    """Episode by episode: both succeed, only a, only b, neither (complete episodes of both)."""
    out = {"both": 0, "only_in_process": 0, "only_graph": 0, "neither": 0, "differ": []}
    for task, per in a.items():
        for seed, ra in per.items():
            rb = b.get(task, {}).get(seed)
            if rb is None or not rb.get("complete", True) or not ra.get("complete", True):
                continue
            key = {(True, True): "both", (True, False): "only_in_process", (False, True): "only_graph",
                   (False, False): "neither"}[(ra["success"], rb["success"])]
            out[key] += 1
            if key.startswith("only"):
                out["differ"].append(f"{task}/{seed}")
    return out


def main(argv=None):
    from sof_ros.bench.meta import command_line, git_commit, machine
    from sof_ros.eval import eval_config, evaluate, read_episodes

    p = argparse.ArgumentParser(prog="sof-bench graph", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="models/sof_metaworld_v2", help="checkpoint (its config.yaml sets the rendering)")
    p.add_argument("--row", default="sof_learning_free", help="policy row run by both the policy and Flow2Action nodes")
    p.add_argument("--tasks", nargs="+", help="default: the checkpoint's protocol tasks")
    p.add_argument("--camera", default="corner", help="the sim bridge's camera")
    p.add_argument("--first-seed", type=int, default=1000, help="held-out seeds from here")
    p.add_argument("--episodes", type=int, default=3, help="seeds per task")
    p.add_argument("--max-steps", type=int, default=500)
    p.add_argument("--rate-hz", type=float, default=30.0, help="lockstep control rate of the graph (the simulator waits "
                   "for every command, so this only caps the speed)")
    p.add_argument("--seconds", type=float, default=300.0, help="wall-clock limit per graph episode")
    p.add_argument("--variants", nargs="+", default=["in_process", "graph", "graph_no_mask"], choices=list(VARIANTS))
    p.add_argument("--workers", type=int, default=2, help="in-process episodes in parallel (graph episodes run one at a time)")
    p.add_argument("--work", default="runs/graph_parity", help="resumable work directory")
    p.add_argument("--out", default="benchmarks/results/graph_parity", help="writes OUT.json and OUT.md")
    a = p.parse_args(argv)
    if a.episodes < 1 or a.max_steps < 1 or a.rate_hz <= 0:
        raise SofError("--episodes, --max-steps and --rate-hz must be positive")
    provenance = {"command": command_line(), "commit": git_commit(), "machine": machine()}
    cfg = eval_config(a.checkpoint, None)
    tasks = list(a.tasks or cfg.eval.tasks)
    seeds = list(range(a.first_seed, a.first_seed + a.episodes))
    work = Path(a.work)
    episodes: dict[str, dict[str, dict[int, dict]]] = {}
    for variant in a.variants:
        if variant == "in_process":
            cfg.eval.tasks, cfg.eval.cameras = tasks, [a.camera]
            cfg.eval.episodes_per_task_camera, cfg.eval.first_seed, cfg.eval.max_steps = a.episodes, a.first_seed, a.max_steps
            print(f"[graph] in process: {a.row}, {len(tasks)} tasks x {len(seeds)} seeds", flush=True)
            evaluate(a.checkpoint, [a.row], cfg, work / "in_process", workers=a.workers)
            episodes[variant] = {t: read_episodes(work / "in_process" / "episodes" / a.row / t / f"{a.camera}.jsonl")
                                 for t in tasks}
            continue
        per: dict[str, dict[int, dict]] = {}
        for task in tasks:
            per[task] = {}
            for seed in seeds:
                f = work / variant / task / f"{seed}.json"
                if f.is_file():
                    rec = json.loads(f.read_text())
                else:
                    rec = graph_episode(a.checkpoint, a.row, task, seed, a.max_steps, a.rate_hz, a.seconds, f,
                                        EXTRA_PARAMS[variant])
                    print(f"[graph] {variant} {task} seed {seed}: {'success' if rec['success'] else 'fail'} "
                          f"after {rec['steps']} steps ({rec['wall_s']} s)", flush=True)
                per[task][seed] = rec
        episodes[variant] = per
    result = {**provenance, "checkpoint": a.checkpoint, "row": a.row,
              "protocol": {"tasks": tasks, "cameras": [a.camera], "seeds": seeds, "max_steps": a.max_steps,
                           "graph_rate_hz": a.rate_hz, "antialias": bool(cfg.sim.antialias)},
              "variants": {v: {"what": VARIANTS[v], **rate_row(episodes[v])} for v in a.variants}}
    if "in_process" in episodes:
        result["agreement"] = {v: agreement(episodes["in_process"], episodes[v]) for v in a.variants if v != "in_process"}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {out.with_suffix('.json')} (+ .md); episode records under {work}")


def markdown(r: dict) -> str:
    from sof_ros.bench.meta import markdown_header
    from sof_ros.eval import tied

    pr = r["protocol"]
    lines = markdown_header("The same episodes in process and through the ROS graph (`sof-bench graph`)", r) + [
        f"- checkpoint `{r['checkpoint']}`, row `{r['row']}` on both the policy and Flow2Action nodes; camera "
        f"{', '.join(pr['cameras'])}, seeds {pr['seeds'][0]}-{pr['seeds'][-1]} of {len(pr['tasks'])} tasks, at most "
        f"{pr['max_steps']} control steps; the graph in lockstep at {pr['graph_rate_hz']:g} Hz",
        "",
        "| variant | success [95% CI] | episodes | what |",
        "|---|---|---:|---|",
    ]
    for name, v in r["variants"].items():
        score = f"**{v['average']:.2f}** [{v['ci95'][0]:.2f}, {v['ci95'][1]:.2f}]" if v["episodes"] else "-"
        extra = f" ({v['incomplete']} cut off by --seconds, not counted)" if v["incomplete"] else ""
        lines.append(f"| {name} | {score} | {v['episodes']}{extra} | {v['what']} |")
    vs = r["variants"]
    names = [n for n in vs if vs[n]["episodes"]]
    pairs = [f"{x} and {y}" for i, x in enumerate(names) for y in names[i + 1:] if tied(vs[x], vs[y])]
    lines += ["", "Tied (each mean inside the other's 95% interval): " + ("; ".join(pairs) if pairs else "none") + "."]
    for name, ag in r.get("agreement", {}).items():
        lines.append(f"- in process vs {name}, episode by episode: both succeed {ag['both']}, neither {ag['neither']}, "
                     f"only in process {ag['only_in_process']}, only {name} {ag['only_graph']}"
                     + (f" ({', '.join(ag['differ'])})" if ag["differ"] else ""))
    lines += ["", "| task | " + " | ".join(vs) + " |", "|---|" + "---:|" * len(vs)]
    for t in pr["tasks"]:
        lines.append(f"| {t} | " + " | ".join(f"{vs[n]['per_task'].get(t, float('nan')):.2f}" for n in vs) + " |")
    return "\n".join(lines) + "\n"
