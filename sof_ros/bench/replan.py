"""`sof-bench replan`: MetaWorld success against the re-planning interval, on the sof-eval protocol.

A plan covers H control steps (the action chunk); the policy plans again every `replan_every`
steps and executes the chunk open loop in between. Fewer steps between plans react sooner to what
the arm did, more keep a skill's motion whole and cost fewer plans. This runs one `sof-eval` per
interval (each its own resumable work directory, DIR/replan_every_<k>) with the checkpoint's
protocol (tasks, cameras, steps, seeds) and writes replan.json / .md / .png: the success rate per
interval with its 95% interval, and which intervals are tied.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from sof_ros.errors import SofError


def main(argv=None):
    from sof_ros.bench.meta import command_line, git_commit, machine
    from sof_ros.eval import eval_config, evaluate, ties
    from sof_ros.flow2action.learned import chunk_length

    p = argparse.ArgumentParser(prog="sof-bench replan", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="trained checkpoint directory (its config.yaml sets the protocol)")
    p.add_argument("--row", default="sof", help="policy row (sof_ros.policies.ROWS)")
    p.add_argument("--intervals", type=int, nargs="+", default=[2, 4, 8],
                   help="control steps between plans, each at most the action chunk's length")
    p.add_argument("--episodes", type=int, default=5, help="held-out seeds per task and camera")
    p.add_argument("--tasks", nargs="+", help="default: the checkpoint's protocol")
    p.add_argument("--max-steps", type=int, help="default: the checkpoint's protocol (MetaWorld: 500)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--work", default="runs/replan", help="work directory; one resumable sof-eval per interval inside")
    p.add_argument("--out", default="benchmarks/results", help="directory for replan.json, .md, .png")
    a = p.parse_args(argv)
    if not a.intervals or min(a.intervals) < 1:
        raise SofError(f"--intervals must be positive control-step counts, got {a.intervals}")
    if a.episodes < 1:
        raise SofError(f"--episodes must be >= 1, got {a.episodes}")
    provenance = {"command": command_line(), "commit": git_commit(), "machine": machine()}
    cfg = eval_config(a.checkpoint, None)
    if a.tasks:
        cfg.eval.tasks = list(a.tasks)
    if a.max_steps:
        cfg.eval.max_steps = a.max_steps
    cfg.eval.episodes_per_task_camera = a.episodes
    chunk = chunk_length(cfg.f2a, cfg.skill)
    too_long = [k for k in a.intervals if k > chunk]
    if too_long:
        raise SofError(f"intervals {too_long} exceed the action chunk ({chunk} steps): the arm would stand still "
                       f"between the chunk's end and the next plan; use intervals up to {chunk}")
    points = {}
    for k in a.intervals:
        print(f"[replan] every {k} steps: {a.row}, {a.episodes} seeds x {len(cfg.eval.tasks)} tasks x "
              f"{len(cfg.eval.cameras)} cameras", flush=True)
        res = evaluate(a.checkpoint, [a.row], cfg, Path(a.work) / f"replan_every_{k}", a.device, replan_every=k,
                       workers=a.workers)
        row = res["rows"][a.row]
        points[str(k)] = {key: row[key] for key in ("average", "ci95", "per_task", "per_camera", "episodes",
                                                    "complete", "wall_s_per_episode") if key in row}
        points[str(k)]["label"] = f"every {k}"
    result = {**provenance, "checkpoint": a.checkpoint, "row": a.row, "action_chunk_steps": chunk,
              "checkpoint_replan_every": int(cfg.eval.replan_every), "protocol": res["protocol"],
              "intervals": points, "tied": ties({p["label"]: p for p in points.values()})}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "replan.json").write_text(json.dumps(result, indent=2))
    (out / "replan.md").write_text(markdown(result))
    plot(result, out / "replan.png")
    print(markdown(result))
    print(f"wrote {out / 'replan.json'} (+ .md, .png); episode records under {a.work}")


def markdown(r: dict) -> str:
    from sof_ros.bench.meta import markdown_header

    pr = r["protocol"]
    lines = markdown_header("MetaWorld success vs re-planning interval (`sof-bench replan`)", r) + [
        f"- checkpoint: `{r['checkpoint']}` (trained and evaluated elsewhere with a plan every "
        f"{r['checkpoint_replan_every']} steps), row `{r['row']}`, action chunk {r['action_chunk_steps']} steps",
        f"- protocol: {len(pr['tasks'])} tasks x cameras {', '.join(pr['cameras'])}; "
        f"{pr['episodes_per_task_camera']} held-out seeds from {pr['first_seed']} per task and camera; at most "
        f"{pr['max_steps']} control steps; score = mean over task x camera with its 95% Wilson interval",
        "",
        "| plan every (steps) | success [95% CI] | episodes | s/episode |",
        "|---:|---|---:|---:|",
    ]
    for k, p in r["intervals"].items():
        flag = "" if p.get("complete", True) else " (incomplete)"
        lines.append(f"| {k}{flag} | **{p['average']:.2f}** [{p['ci95'][0]:.2f}, {p['ci95'][1]:.2f}] | "
                     f"{p.get('episodes', '-')} | {p.get('wall_s_per_episode', float('nan')):.1f} |")
    lines += ["", "Tied (each mean inside the other's 95% interval): " + ("; ".join(r["tied"]) if r["tied"] else "none") + "."]
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [int(k) for k in r["intervals"]]
    order = sorted(range(len(ks)), key=ks.__getitem__)
    pts = list(r["intervals"].values())
    x = [ks[i] for i in order]
    y = [pts[i]["average"] for i in order]
    lo = [pts[i]["average"] - pts[i]["ci95"][0] for i in order]
    hi = [pts[i]["ci95"][1] - pts[i]["average"] for i in order]
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.errorbar(x, y, yerr=[lo, hi], marker="o", capsize=4)
    ax.set_xscale("log", base=2)
    ax.set_xticks(x, [str(v) for v in x])
    ax.set_xlabel("control steps between plans")
    ax.set_ylabel("success (mean over task x camera)")
    ax.set_ylim(0, 1)
    ax.set_title(f"{r['row']}: success vs re-planning interval, 95% CIs", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
