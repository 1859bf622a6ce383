"""`sof-bench d_act`: how the learned Flow2Action's closed-loop success changes with the size of
the action-labelled set D_act (episodes per task). Stages 1-2 are reused from a checkpoint; only
Flow2Action is retrained per size, so the curve isolates the action data.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from sof_ros.bench.meta import command_line, git_commit, machine
from sof_ros.config import from_dict


def main(argv=None):
    import yaml

    from sof_ros.eval import evaluate
    from sof_ros.learn.reports import success_bars
    from sof_ros.train import train

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--checkpoint", default="models/sof_metaworld")
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--episodes", type=int, default=3, help="held-out seeds per task")
    p.add_argument("--tasks", nargs="+")
    p.add_argument("--workers", type=int, default=1, help="eval processes (see sof-eval --workers)")
    p.add_argument("--work", default="runs/d_act")
    p.add_argument("--out", default="benchmarks/results/d_act.json")
    a = p.parse_args(argv)
    provenance = {"command": command_line(), "commit": git_commit(), "machine": machine()}  # code as started
    ckpt = Path(a.checkpoint)
    base = from_dict(yaml.safe_load((ckpt / "config.yaml").read_text()))
    tasks = a.tasks or base.eval.tasks
    rows = {}
    for n in a.sizes:
        cfg = from_dict(yaml.safe_load((ckpt / "config.yaml").read_text()))
        run = Path(a.work) / f"d_act_{n}"
        run.mkdir(parents=True, exist_ok=True)
        for name in ("skill.pt", "policy.pt", "instructions.pt"):
            shutil.copy(ckpt / name, run / name)
        (run / "f2a.ckpt").unlink(missing_ok=True)
        cfg.train.out = str(run)
        cfg.f2a.d_act_episodes_per_task = n
        train(cfg, stages=("f2a",))
        res = evaluate(str(run), ["sof"], tasks, a.episodes, base.eval.first_seed, base.eval.max_steps, base.sim,
                       workers=a.workers)
        rows[f"d_act_{n}"] = {**res["rows"]["sof"], "label": f"SOF, {n} action-labelled episodes per task"}
        print(f"D_act={n}: average success {rows[f'd_act_{n}']['average']:.2f}")
    out = Path(a.out)
    result = {**provenance,
              "episodes_per_task": a.episodes, "seeds": res["seeds"], "rows": rows}
    out.write_text(json.dumps(result, indent=2))
    success_bars(rows, out.with_suffix(".png"), "learned Flow2Action vs size of D_act (episodes per task)")
    lines = ["# Learned Flow2Action vs D_act size", "", f"- command: `{result['command']}`",
             f"- commit: `{result['commit']}`", f"- machine: {result['machine']}", "",
             "| D_act episodes per task | average success |", "|---|---|"]
    lines += [f"| {k.split('_')[-1]} | {v['average']:.2f} |" for k, v in rows.items()]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
