"""`sof-bench d_act`: how closed-loop success changes with the size of the action-labelled set
D_act (episodes per task). Stages 1-2 are reused from a checkpoint; only the action heads of the
asked rows (default: the learned Flow2Action of `sof`, and `bc`, which sees no video at all) are
retrained per size, so the curve isolates the action data. Every point carries its 95% interval.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from sof_ros.bench.meta import command_line, git_commit, machine, markdown_header
from sof_ros.errors import run_cli


def main(argv=None):
    def body():
        from sof_ros.eval import eval_config, evaluate, ties
        from sof_ros.learn.reports import success_bars
        from sof_ros.policies import row_spec
        from sof_ros.train import train

        p = argparse.ArgumentParser(description=__doc__)
        p.add_argument("--checkpoint", default="models/sof_metaworld")
        p.add_argument("--config", help="YAML whose eval/sim keys override the checkpoint's protocol")
        p.add_argument("--rows", nargs="+", default=["sof", "bc"], help="rows whose action head is retrained per size")
        p.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8])
        p.add_argument("--episodes", type=int, default=3, help="held-out seeds per task and camera")
        p.add_argument("--workers", type=int, default=1, help="eval processes (see sof-eval --workers)")
        p.add_argument("--work", default="runs/d_act")
        p.add_argument("--out", default="benchmarks/results/d_act.json")
        a = p.parse_args(argv)
        provenance = {"command": command_line(), "commit": git_commit(), "machine": machine()}  # code as started
        ckpt = Path(a.checkpoint)
        video_stages = {"skill", "policy", "pixel_skill", "pixel_policy"}
        rows, protocol = {}, None
        for n in a.sizes:
            cfg = eval_config(str(ckpt), a.config)
            run = Path(a.work) / f"d_act_{n}"
            run.mkdir(parents=True, exist_ok=True)
            for f in ckpt.iterdir():  # Stages 1-2 and instruction embeddings, as trained on the videos
                if f.name == "instructions.pt" or (f.suffix == ".pt" and f.stem in video_stages):
                    shutil.copy(f, run / f.name)
            heads = [s for r in a.rows for s in row_spec(r).stages if s not in video_stages]
            for h in heads:
                (run / f"{h}.ckpt").unlink(missing_ok=True)
            cfg.train.out = str(run)
            cfg.f2a.d_act_episodes_per_task_camera = n
            train(cfg, stages=tuple(dict.fromkeys(heads)))
            res = evaluate(str(run), a.rows, cfg, run / "eval", workers=a.workers, episodes=a.episodes)
            protocol = res["protocol"]
            for r in a.rows:
                rows[f"{r}_d_act_{n}"] = {**res["rows"][r], "label": f"{r}, {n} action-labelled episodes per task",
                                          "row": r, "d_act_episodes_per_task": n}
                print(f"{r} D_act={n}: {rows[f'{r}_d_act_{n}']['average']:.2f} {rows[f'{r}_d_act_{n}']['ci95']}")
        out = Path(a.out)
        result = {**provenance, "protocol": protocol, "rows": rows}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        success_bars(rows, out.with_suffix(".png"), "success vs size of D_act (episodes per task), 95% CIs")
        lines = markdown_header("Success vs D_act size", result) + [
            f"- protocol: {protocol}", "",
            "| row | D_act episodes per task | average success [95% CI] |", "|---|---|---|"]
        lines += [f"| {v['row']} | {v['d_act_episodes_per_task']} | {v['average']:.2f} "
                  f"[{v['ci95'][0]:.2f}, {v['ci95'][1]:.2f}] |" for v in rows.values()]
        tie = ties(rows)
        lines += ["", "Tied (each inside the other's 95% interval): " + ("; ".join(tie) if tie else "none") + "."]
        out.with_suffix(".md").write_text("\n".join(lines) + "\n")

    run_cli(body)
