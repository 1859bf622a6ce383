"""`sof-bench transfer`: skills learned from one arm's videos drive another arm (issue 13).

Two arms in the same robosuite scenes, seen by the same camera (config/transfer_panda.yaml,
config/transfer_sawyer.yaml: robosuite 1.4's Lift and Stack scenes, three language-conditioned
tasks). Stages 1-2 (flow skills, the Transformer) are learned from videos -- of the Panda, of the
Sawyer, or of both -- and are shared across arms; Stage 3 (Flow2Action) is per arm, trained on a
small action-labelled set D_act of the arm it drives (`sof-train --init-from`). Rows, each on
held-out seeds with per-task 95% Wilson intervals:

  panda_only          Stages 1-2 on Panda videos, Flow2Action on the Panda D_act
  sawyer_to_panda     Stages 1-2 on Sawyer videos only, Flow2Action on the same Panda D_act
  both_to_panda       Stages 1-2 on Sawyer + Panda videos, Flow2Action on the Panda D_act
  bc_panda            behaviour cloning on the Panda D_act (no videos)
  panda_to_sawyer     the reverse: Stages 1-2 on Panda videos, Flow2Action on a Sawyer D_act
  bc_sawyer           the reverse direction's no-video reference (sawyer_only: with --rows)
  learning_free_panda   Stages 1-2 on Sawyer videos, the learning-free solver on the Panda (no D_act)
  learning_free_sawyer  Stages 1-2 on Panda videos, the learning-free solver on the Sawyer
  expert_panda, expert_sawyer   the scripted experts (privileged state), per arm

and the curve: success vs D_act size (episodes per task) for sawyer_to_panda and bc_panda (panda_only
with --curve-rows).

Every step is resumable from `--work` (datasets, checkpoints, episode records are kept and reused):
collect -> flow -> video stages -> heads -> eval -> report. Results: --out (.json, .md, .png).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from sof_ros.bench.meta import command_line, git_commit, machine, markdown_header
from sof_ros.errors import SofError, run_cli

ARMS = ("panda", "sawyer")
# row -> (videos that trained Stages 1-2 or None, arm driven, policy row)
ROWS: dict[str, tuple[str | None, str, str]] = {
    "panda_only": ("panda", "panda", "sof"),
    "sawyer_to_panda": ("sawyer", "panda", "sof"),
    "both_to_panda": ("both", "panda", "sof"),
    "bc_panda": (None, "panda", "bc"),
    "panda_to_sawyer": ("panda", "sawyer", "sof"),
    "sawyer_only": ("sawyer", "sawyer", "sof"),
    "bc_sawyer": (None, "sawyer", "bc"),
    "learning_free_panda": ("sawyer", "panda", "sof_learning_free"),
    "learning_free_sawyer": ("panda", "sawyer", "sof_learning_free"),
    "expert_panda": (None, "panda", "expert"),
    "expert_sawyer": (None, "sawyer", "expert"),
}
LABELS = {
    "panda_only": "Panda only: Stages 1-2 on Panda videos, Flow2Action on the Panda D_act",
    "sawyer_to_panda": "Sawyer -> Panda: Stages 1-2 on Sawyer videos only, Flow2Action on the Panda D_act",
    "both_to_panda": "Sawyer + Panda videos: Stages 1-2 on both, Flow2Action on the Panda D_act",
    "bc_panda": "BC on the Panda D_act (no videos)",
    "panda_to_sawyer": "Panda -> Sawyer: Stages 1-2 on Panda videos only, Flow2Action on the Sawyer D_act",
    "sawyer_only": "Sawyer only: Stages 1-2 on Sawyer videos, Flow2Action on the Sawyer D_act",
    "bc_sawyer": "BC on the Sawyer D_act (no videos)",
    "learning_free_panda": "Learning-free Flow2Action on the Panda, Stages 1-2 on Sawyer videos (no D_act)",
    "learning_free_sawyer": "Learning-free Flow2Action on the Sawyer, Stages 1-2 on Panda videos (no D_act)",
    "expert_panda": "Scripted expert on the Panda (privileged state)",
    "expert_sawyer": "Scripted expert on the Sawyer (privileged state)",
}
CURVE_ROWS = ("sawyer_to_panda", "panda_only", "bc_panda")
# What runs by default on a shared 2-core CPU (the others stay one flag away): sawyer_only is left out
# (bc_sawyer is the reverse direction's no-video reference), and the curve is transfer vs BC.
DEFAULT_ROWS = tuple(r for r in ROWS if r != "sawyer_only")
DEFAULT_CURVE_ROWS = ("sawyer_to_panda", "bc_panda")


def _log(msg: str) -> None:
    print(f"[transfer {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- data -----------------------------------------------------------------------------------------
def prepare_data(cfgs: dict, gap: int, workers: int = 1) -> dict:
    """Collect each arm's demonstrations and their flow where missing; the expert's success rate
    while collecting (training seeds) is kept in DATASET/collect.json."""
    from sof_ros.data.collect import collect
    from sof_ros.data.dataset import Dataset, flow_key
    from sof_ros.flow.extract import main as flow_main

    out = {}
    for arm, cfg in cfgs.items():
        ds = Path(cfg.train.dataset)
        record = ds / "collect.json"
        if not (ds / "dataset.json").is_file():
            c = cfg.collect
            _log(f"collecting {arm}: {c.episodes_per_task} episodes x {len(c.tasks)} tasks -> {ds}")
            rates = collect(str(ds), c.tasks, c.episodes_per_task, c.seed, cfg.sim, c.act_fraction, c.expert_noise,
                            list(c.cameras), c.only_successful, progress=False, depth=c.depth)
            record.write_text(json.dumps({"expert_success_training_seeds": rates, "commit": git_commit()}, indent=1))
        _log(f"flow/{flow_key(cfg.flow.estimator, gap)} for {ds} (sof-flow skips episodes that hold it)")
        flow_main([str(ds), "--estimator", cfg.flow.estimator, "--gap", str(gap), "--workers", str(workers)])
        eps = Dataset(ds).episodes()
        out[arm] = {"dataset": str(ds), "episodes": len(eps), "in_d_act": sum(e.in_d_act for e in eps),
                    **(json.loads(record.read_text()) if record.is_file() else {})}
    return out


def combined_dataset(cfgs: dict, work: Path) -> Path:
    """Both arms' videos in one dataset, as links to each arm's files: the Panda's first. The action
    files of the episodes flagged in_d_act are linked too -- Stages 1-2 never read them, but the
    training data loads a flagged episode's actions, and the flag is what makes Stage 2 leave that
    episode out (policy.exclude_d_act) as it does in each arm's own dataset."""
    import shutil

    from sof_ros.data.dataset import Dataset

    root = work / "data_both"
    if (root / "dataset.json").is_file():
        return root
    tmp = work / "data_both.tmp"
    shutil.rmtree(tmp, ignore_errors=True)  # a run interrupted while linking
    out = Dataset.create(tmp)
    i = 0
    for arm in ARMS:
        src = Dataset(cfgs[arm].train.dataset)
        for p in src.episode_paths():
            link = tmp / "episodes" / f"ep_{i:06d}.h5"
            link.symlink_to(p.resolve())
            if src.action_path(p).is_file():
                out.action_path(link).symlink_to(src.action_path(p).resolve())
            i += 1
    tmp.rename(root)
    return root


# --- training -------------------------------------------------------------------------------------
def _done(out: Path, stage: str) -> bool:
    return (out / f"{stage}.pt").is_file() and (out / "embodiment.json").is_file()


def train_video_stages(cfgs: dict, work: Path) -> dict[str, Path]:
    """Stages 1-2 on the Panda's videos, the Sawyer's, and both (each with its own arm's config, the
    same network sizes)."""
    import copy

    from sof_ros.train import train

    out = {}
    for source in ("panda", "sawyer", "both"):
        cfg = copy.deepcopy(cfgs["panda" if source == "both" else source])
        if source == "both":
            cfg.train.dataset = str(combined_dataset(cfgs, work))
        cfg.train.out = str(work / f"video_{source}")
        out[source] = Path(cfg.train.out)
        if _done(out[source], "policy"):
            continue
        _log(f"Stages 1-2 on {source} videos -> {cfg.train.out}")
        train(cfg, stages=("skill", "policy"), progress=False)
        if source == "both":  # the config is the Panda's, the videos are both arms'
            rec_path = out[source] / "embodiment.json"
            rec = json.loads(rec_path.read_text())
            for s in ("skill", "policy"):
                rec["stages"][s]["arm"] = "panda+sawyer"
            rec_path.write_text(json.dumps(rec, indent=2))
    return out


def train_head(cfgs: dict, video: dict, work: Path, row: str, n: int) -> Path:
    """The checkpoint of `row` with D_act of n episodes per task (its Stage 3 on the driven arm)."""
    import copy

    from sof_ros.train import init_from, train

    source, arm, policy_row = ROWS[row]
    cfg = copy.deepcopy(cfgs[arm])
    cfg.f2a.d_act_episodes_per_task_camera = n
    if policy_row == "bc":
        cfg.train.out = str(work / "heads" / f"bc_{arm}_d{n}")
        if not _done(Path(cfg.train.out), "bc"):
            _log(f"BC on the {arm} D_act ({n} per task) -> {cfg.train.out}")
            train(cfg, stages=("bc",), progress=False)
        return Path(cfg.train.out)
    cfg.train.out = str(work / "heads" / f"{source}_to_{arm}_d{n}")
    if not _done(Path(cfg.train.out), "f2a"):
        _log(f"Flow2Action for the {arm} ({n} per task) on Stages 1-2 from {source} videos -> {cfg.train.out}")
        cfg = init_from(video[source], cfg, ("f2a",))
        train(cfg, stages=("f2a",), progress=False)
    return Path(cfg.train.out)


def checkpoint_for(cfgs: dict, video: dict, work: Path, row: str, n: int) -> Path | None:
    source, arm, policy_row = ROWS[row]
    if policy_row == "expert":
        return None
    if policy_row == "sof_learning_free":  # no D_act: the video stages with the driven arm's config
        import copy

        from sof_ros.train import init_from, write_embodiment

        out = work / "heads" / f"{source}_to_{arm}_learning_free"
        if not (out / "embodiment.json").is_file():
            cfg = copy.deepcopy(cfgs[arm])
            cfg.train.out = str(out)
            cfg = init_from(video[source], cfg, ())
            import yaml

            from sof_ros.config import to_dict

            (out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
            write_embodiment(out, cfg, ())
            _instructions(cfg, out)
        return out
    return train_head(cfgs, video, work, row, n)


def _instructions(cfg, out: Path) -> None:
    """instructions.pt for a checkpoint that trains no stage (the learning-free row)."""
    import numpy as np
    import torch

    from sof_ros.sim import instruction_for
    from sof_ros.text import InstructionEncoder

    enc = InstructionEncoder()
    for t in cfg.eval.tasks:
        enc(instruction_for(t, cfg.sim))
    torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in enc.cache.items()}, out / "instructions.pt")


# --- evaluation -----------------------------------------------------------------------------------
def evaluate_row(cfgs: dict, ckpt: Path | None, row: str, work: Path, episodes: int, name: str) -> dict:
    import copy

    from sof_ros.config import load_checkpoint_config
    from sof_ros.eval import evaluate

    source, arm, policy_row = ROWS[row]
    cfg = load_checkpoint_config(ckpt) if ckpt is not None else copy.deepcopy(cfgs[arm])
    cfg.eval = copy.deepcopy(cfgs[arm].eval)  # one protocol for every row
    res = evaluate(str(ckpt) if ckpt else None, [policy_row], cfg, work / "eval" / name, episodes=episodes,
                   progress=False)
    entry = res["rows"][policy_row]
    return {"label": LABELS[row], "row": policy_row, "arm": arm, "videos": source, "checkpoint": str(ckpt or ""),
            **{k: entry[k] for k in ("per_task", "per_task_ci95", "average", "ci95", "episodes",
                                      "episodes_per_task_camera", "complete", "wall_s_per_episode")}}


# --- report ---------------------------------------------------------------------------------------
def verdict(rows: dict, n: int) -> dict:
    """The issue's targets, checked on the measured rows: Sawyer -> Panda inside Panda-only's interval,
    and above BC with the same D_act; per task, which transfer."""
    from sof_ros.eval import tied

    t, p, b = rows.get("sawyer_to_panda"), rows.get("panda_only"), rows.get("bc_panda")
    if not (t and p and b):
        return {}
    per_task = {}
    for task in t["per_task"]:
        # transfers: the Sawyer's skills solve it on the Panda at all, and not measurably worse than the
        # Panda's own (Panda-only's mean inside or below Sawyer -> Panda's interval); doing better counts
        _, th = t["per_task_ci95"][task]
        per_task[task] = {"sawyer_to_panda": t["per_task"][task], "panda_only": p["per_task"][task],
                          "bc_panda": b["per_task"][task],
                          "transfers": bool(t["per_task"][task] > 0 and p["per_task"][task] <= th)}
    return {"d_act_episodes_per_task": n,
            "sawyer_to_panda_within_panda_only_ci": bool(p["ci95"][0] <= t["average"] <= p["ci95"][1]),
            "sawyer_to_panda_tied_with_panda_only": tied(t, p),
            "sawyer_to_panda_mean_above_bc": bool(t["average"] > b["average"]),
            "sawyer_to_panda_ci_above_bc_ci": bool(t["ci95"][0] > b["ci95"][1]),
            "per_task": per_task}


def markdown(result: dict) -> str:
    from sof_ros.eval import ties

    pr, rows = result["protocol"], result["rows"]
    tasks = pr["tasks"]
    named = ", ".join(f'{t} ("{pr["instructions"][t]}")' for t in tasks)
    lines = markdown_header("Cross-embodiment: skills from one arm's videos drive another arm", result) + [
        f"- protocol: robosuite {pr['robosuite']} scenes, tasks {named}; "
        f"camera {pr['camera']} {pr['resolution'][0]}x{pr['resolution'][1]}; held-out seeds {pr['first_seed']}.. "
        f"({pr['episodes_per_task']} per task for the table, {pr['curve_episodes_per_task']} for the curve's other "
        f"points); at most {pr['max_steps']} control steps (10 Hz); D_act = {pr['d_act_main']} episodes per task "
        f"for the table, {pr['sizes']} for the curve; 95% Wilson intervals", "",
        "| row | arm driven | Stages 1-2 videos | " + " | ".join(tasks) + " | average [95% CI] | episodes |",
        "|---|---|---|" + "---|" * (len(tasks) + 2)]
    for name, r in rows.items():
        cells = " | ".join(f"{r['per_task'][t]:.2f} [{r['per_task_ci95'][t][0]:.2f}, {r['per_task_ci95'][t][1]:.2f}]"
                           for t in tasks)
        lines.append(f"| {name} | {r['arm']} | {r['videos'] or '-'} | {cells} | **{r['average']:.2f}** "
                     f"[{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}] | {r['episodes']} |")
    tie = ties(rows)
    lines += ["", "Tied (each mean inside the other's 95% interval): " + ("; ".join(tie) if tie else "none") + ".", "",
              "Rows: " + "; ".join(f"**{k}**: {v['label']}" for k, v in rows.items()) + ".", ""]
    curve = result.get("curve", {})
    if curve:
        lines += ["## Success vs D_act size (episodes per task)", "", "![curve](transfer.png)", "",
                  "| row | " + " | ".join(str(n) for n in pr["sizes"]) + " |", "|---|" + "---|" * len(pr["sizes"])]
        for row in CURVE_ROWS:
            cells = []
            for n in pr["sizes"]:
                c = curve.get(f"{row}_d{n}")
                cells.append(f"{c['average']:.2f} [{c['ci95'][0]:.2f}, {c['ci95'][1]:.2f}] ({c['episodes']})" if c else "-")
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
        ctie = ties(curve)
        lines += ["", "Tied on the curve: " + ("; ".join(ctie) if ctie else "none") + ".", ""]
    v = result.get("verdict", {})
    if v:
        lines += ["## Targets", "",
                  f"- Sawyer -> Panda inside the Panda-only 95% interval: **{v['sawyer_to_panda_within_panda_only_ci']}** "
                  f"(tied: {v['sawyer_to_panda_tied_with_panda_only']})",
                  f"- Sawyer -> Panda above BC with the same Panda D_act: mean **{v['sawyer_to_panda_mean_above_bc']}**, "
                  f"intervals apart: {v['sawyer_to_panda_ci_above_bc_ci']}",
                  "- per task (transfers = Sawyer -> Panda above zero and not below Panda-only: Panda-only's mean inside or under its interval): "
                  + "; ".join(f"{t}: {'transfers' if x['transfers'] else 'does not'} ({x['sawyer_to_panda']:.2f} vs "
                              f"{x['panda_only']:.2f}, BC {x['bc_panda']:.2f})" for t, x in v["per_task"].items())]
    data = result.get("data", {})
    if data:
        lines += ["", "## Data", ""]
        for arm, d in data.items():
            rates = d.get("expert_success_training_seeds", {})
            lines.append(f"- {arm}: {d['episodes']} videos ({d['in_d_act']} flagged D_act, the first "
                         f"{pr['d_act_main']} per task used in the table) in {d['dataset']}"
                         + (f"; expert success while collecting: " + ", ".join(f"{t} {r:.2f}" for t, r in rates.items())
                            if rates else ""))
    if result.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    from sof_ros.learn import reports  # noqa: F401  (selects the Agg backend)
    import matplotlib.pyplot as plt

    pr, curve = result["protocol"], result.get("curve", {})
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for i, row in enumerate(CURVE_ROWS):
        pts = [(n, curve[f"{row}_d{n}"]) for n in pr["sizes"] if f"{row}_d{n}" in curve]
        if not pts:
            continue
        x = [n * (1 + 0.04 * (i - 1)) for n, _ in pts]
        y = [c["average"] for _, c in pts]
        err = [[c["average"] - c["ci95"][0] for _, c in pts], [c["ci95"][1] - c["average"] for _, c in pts]]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=row)
    ax.set_xscale("log", base=2)
    ax.set_xticks(pr["sizes"], [str(n) for n in pr["sizes"]])
    ax.set_xlabel("Panda D_act: action-labelled episodes per task")
    ax.set_ylabel("success (95% CI)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Panda success vs D_act size")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- entry point ----------------------------------------------------------------------------------
def main(argv=None):
    def body():
        import torch

        from sof_ros.config import load_config

        p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--panda-config", default="config/transfer_panda.yaml")
        p.add_argument("--sawyer-config", default="config/transfer_sawyer.yaml")
        p.add_argument("--work", default="runs/transfer", help="datasets' combined view, checkpoints, episode records")
        p.add_argument("--rows", nargs="+", default=list(DEFAULT_ROWS), help=f"table rows: {list(ROWS)}")
        p.add_argument("--d-act", type=int, help="D_act episodes per task for the table (default: the configs' f2a key)")
        p.add_argument("--sizes", type=int, nargs="*", default=[1, 2, 4, 8], help="D_act sizes for the curve")
        p.add_argument("--curve-rows", nargs="*", default=list(DEFAULT_CURVE_ROWS), help=f"of {list(CURVE_ROWS)}")
        p.add_argument("--episodes", type=int, help="held-out seeds per task for the table (default: eval key)")
        p.add_argument("--curve-episodes", type=int, default=8, help="held-out seeds per task, curve points "
                       "other than the table's D_act")
        p.add_argument("--until", choices=("data", "video", "heads", "eval"), help="stop after this step")
        p.add_argument("--out", default="benchmarks/results/transfer.json")
        a = p.parse_args(argv)
        torch.set_num_threads(1)
        provenance = {"command": command_line(), "commit": git_commit(), "machine": machine()}
        cfgs = {"panda": load_config(a.panda_config), "sawyer": load_config(a.sawyer_config)}
        for arm, cfg in cfgs.items():
            if cfg.sim.backend != "robosuite" or (cfg.sim.robot or "panda") != arm:
                raise SofError(f"--{arm}-config must set sim.backend robosuite and sim.robot {arm}")
        unknown = [r for r in a.rows + a.curve_rows if r not in ROWS]
        if unknown:
            raise SofError(f"unknown transfer row(s) {unknown}; choose from {list(ROWS)}")
        work = Path(a.work)
        work.mkdir(parents=True, exist_ok=True)
        n_main = a.d_act or cfgs["panda"].f2a.d_act_episodes_per_task_camera
        episodes = a.episodes or cfgs["panda"].eval.episodes_per_task_camera
        gap = cfgs["panda"].skill.stride
        data = prepare_data(cfgs, gap)
        if a.until == "data":
            return
        video = train_video_stages(cfgs, work)
        if a.until == "video":
            return
        ckpts = {r: checkpoint_for(cfgs, video, work, r, n_main) for r in a.rows}
        if a.until == "heads":
            return
        rows, curve = {}, {}
        for r in a.rows:  # the table first (its results are written before the curve starts)
            _log(f"evaluating {r}")
            rows[r] = evaluate_row(cfgs, ckpts[r], r, work, episodes, r)
            _log(f"{r}: {rows[r]['average']:.2f} {rows[r]['ci95']}")
        report = dict(a=a, provenance=provenance, cfgs=cfgs, data=data, episodes=episodes, n_main=n_main)
        _write(rows, curve, **report)
        for r, n in [(r, n) for n in a.sizes for r in a.curve_rows]:
            if n == n_main and r in rows:
                curve[f"{r}_d{n}"] = {**rows[r], "d_act_episodes_per_task": n}
                continue
            ck = train_head(cfgs, video, work, r, n)
            _log(f"evaluating {r} with D_act {n}")
            curve[f"{r}_d{n}"] = {**evaluate_row(cfgs, ck, r, work, a.curve_episodes, f"{r}_d{n}"),
                                  "d_act_episodes_per_task": n}
            _write(rows, curve, **report)  # each point as it comes
        print(markdown(json.loads(Path(a.out).read_text())))
        print(f"results: {a.out} (+ .md, .png); work: {work}")

    run_cli(body)


def _write(rows: dict, curve: dict, a, provenance: dict, cfgs: dict, data: dict, episodes: int, n_main: int) -> None:
    """The results files as they stand (rewritten after the table and after every curve point)."""
    import robosuite

    from sof_ros.sim import instruction_for

    pc = cfgs["panda"]
    result = {**provenance, "load_avg_1min_end": round(os.getloadavg()[0], 2),
              "protocol": {"robosuite": robosuite.__version__, "tasks": list(pc.eval.tasks),
                           "instructions": {t: instruction_for(t, pc.sim) for t in pc.eval.tasks},
                           "camera": pc.sim.camera, "resolution": [pc.sim.width, pc.sim.height],
                           "first_seed": pc.eval.first_seed, "max_steps": pc.eval.max_steps,
                           "episodes_per_task": episodes, "curve_episodes_per_task": a.curve_episodes,
                           "d_act_main": n_main, "sizes": list(a.sizes),
                           "configs": {"panda": a.panda_config, "sawyer": a.sawyer_config}},
              "data": data, "rows": rows, "curve": curve, "verdict": verdict(rows, n_main)}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(markdown(result))
    plot(result, out.with_suffix(".png"))
