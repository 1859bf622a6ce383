"""`sof-bench libero`: closed-loop success on LIBERO-GOAL and LIBERO-10 with the Franka Panda.

Runs `sof-eval`'s resumable evaluation (sof_ros.eval.evaluate) for the rows on every task of the
config's protocol -- held-out initial states (LIBERO's own evaluation states 0..), LIBERO's step
limit -- then splits it by suite into benchmarks/results/libero.json (+ .md):

    {"command", "commit", "machine",
     "protocol": {"suites": [...], "max_steps": {suite: control steps}, "episodes_per_task": n, ...},
     "suites": {"libero_goal": {"rows": {ROW: {"per_task": {...}, "average", "ci95": [lo, hi], ...}}},
                "libero_10": {...}}}

A suite's average is the mean over its tasks (equal episodes per task), its 95% interval the Wilson
interval of the pooled episodes. `--combine LABEL=FILE ...` puts the rows of results files of one
protocol (runs of one recipe with other training seeds, say) side by side as ROW@LABEL, with each
row pooled over the files beside them. Rows may be run by separate invocations (they are resumable and
additive); `rows_provenance` records the last command that ran each row, written when it starts (a
run stopped by hand keeps it), and each row's `commits`/`machines` count the episodes each code ran.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from sof_ros.errors import SofError, run_cli

SUITES = ("libero_goal", "libero_10")


def split_by_suite(work: Path, protocol: dict, rows: list[str]) -> dict:
    from sof_ros.eval import _episode_file, episodes_code, read_episodes, wilson_ci
    from sof_ros.policies import ROWS
    from sof_ros.sim.libero_env import suite_tasks

    out = {}
    for suite in SUITES:
        tasks = [t for t in protocol["tasks"] if t in set(suite_tasks(suite))]
        if not tasks:
            continue
        entry = {"tasks": tasks, "rows": {}}
        for row in rows:
            recs = {t: read_episodes(_episode_file(work, row, t, protocol["cameras"][0])) for t in tasks}
            recs = {t: [r for s, r in sorted(v.items()) if s >= protocol["first_seed"]] for t, v in recs.items()}
            if not all(recs.values()):
                continue
            n = min(len(v) for v in recs.values())
            recs = {t: v[:n] for t, v in recs.items()}  # equal episodes per task: the first n states
            counted = [r for v in recs.values() for r in v]
            wins = {t: sum(r["success"] for r in v) for t, v in recs.items()}
            total = sum(wins.values())
            entry["rows"][row] = {
                "label": ROWS[row].label if row in ROWS else row,
                "per_task": {t: wins[t] / n for t in tasks},
                "per_task_ci95": {t: list(wilson_ci(wins[t], n)) for t in tasks},
                "average": total / (n * len(tasks)), "ci95": list(wilson_ci(total, n * len(tasks))),
                "episodes": n * len(tasks), "episodes_per_task": n,
                "steps_to_success_mean": _mean([r["steps"] for r in counted if r["success"]]),
                "wall_s_per_episode": _mean([r["wall_s"] for r in counted]),
                **episodes_code(counted),
            }
        if entry["rows"]:  # a suite whose tasks another invocation is still running is not reported empty
            out[suite] = entry
    return out


def demonstrations_of(checkpoint: str | Path) -> dict | None:
    """What the checkpoint's own config says its demonstrations were (sof-collect's seeds are LIBERO's
    initial states), so a table says which states training saw beside the held-out ones. Not
    `--config`'s: its collect keys describe the shipped recipe, not necessarily this checkpoint."""
    from sof_ros.config import load_checkpoint_config
    from sof_ros.data.collect import d_act_count

    if not (Path(checkpoint) / "config.yaml").is_file():
        return None
    c = load_checkpoint_config(checkpoint).collect
    return {"first_state": int(c.seed), "per_task": int(c.episodes_per_task),
            "d_act_per_task": d_act_count(c.act_fraction, c.episodes_per_task)}


def read_provenance(work: Path) -> dict:
    """{row: {command, commit, machine}} of the invocations that ran each row's episodes."""
    path = Path(work) / "provenance.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def record_provenance(work: Path, rows: list[str], provenance: dict) -> None:
    data = read_provenance(work)
    data.update({r: provenance for r in rows})
    (Path(work) / "provenance.json").write_text(json.dumps(data, indent=1))


# protocol keys two runs must share to stand in one table (the checkpoint is what differs)
COMBINE_KEYS = ("max_steps_env", "episodes_per_task", "first_seed", "camera", "resolution",
                "demonstrations", "replan_every", "solver", "plan_samples", "ensemble", "plan_flow_scale")


def combine_runs(specs: list[str], rows: list[str] | None = None) -> dict:
    """LABEL=FILE results files of one protocol -> one table: each row of each file as ROW@LABEL, and
    each row pooled over the files (`ROW pooled`: all their episodes; its Wilson interval treats them
    as one sample, so it does not widen for a spread between runs -- the per-run columns show that)."""
    from sof_ros.eval import wilson_ci

    runs = {}
    for spec in specs:
        label, sep, path = spec.partition("=")
        if not sep or not label or not path:
            raise SofError(f"--combine takes LABEL=FILE, e.g. seed1=benchmarks/results/libero_v2_seed1.json, got '{spec}'")
        if label in runs:
            raise SofError(f"--combine label '{label}' given twice")
        try:
            res = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError):
            res = None
        if not isinstance(res, dict) or not {"suites", "protocol", "command", "commit", "machine"} <= res.keys():
            raise SofError(f"{path} is not a sof-bench libero results file")
        runs[label] = (path, res)
    first_label, (_, first) = next(iter(runs.items()))
    for label, (path, res) in runs.items():
        differ = [k for k in COMBINE_KEYS if res["protocol"].get(k) != first["protocol"].get(k)]
        if differ:
            raise SofError(f"{path} ({label}) has another protocol than {first_label}'s: {', '.join(differ)}; "
                           "combine runs of one protocol")
    suites, left_out = {}, {}
    for suite in SUITES:
        present = {lb: res["suites"][suite] for lb, (_, res) in runs.items() if suite in res["suites"]}
        if len(present) < len(runs):  # a run that has not finished the suite: the suite is not compared
            if present:
                left_out[suite] = f"only in {', '.join(present)}"
            continue
        tasks = next(iter(present.values()))["tasks"]
        if any(e["tasks"] != tasks for e in present.values()):
            raise SofError(f"the files hold {suite} on different tasks; combine runs of one protocol")
        if len({res["protocol"]["max_steps"].get(suite) for _, res in runs.values()}) > 1:  # per suite: a file
            raise SofError(f"the files ran {suite} with different step limits; combine runs of one protocol")
        names = rows or list(dict.fromkeys(r for e in present.values() for r in e["rows"]))
        entry = {"tasks": tasks, "rows": {}}
        for row in names:
            have = {lb: e["rows"][row] for lb, e in present.items() if row in e["rows"]}
            if len(have) < len(present):
                raise SofError(f"row '{row}' is not in every file's {suite}: only in {', '.join(have) or 'none'}")
            for lb, r in have.items():
                entry["rows"][f"{row}@{lb}"] = r
            n = {r["episodes_per_task"] for r in have.values()}
            if len(n) > 1:
                raise SofError(f"row '{row}' ran {sorted(n)} episodes per task in different files of {suite}")
            n = n.pop()
            wins = {t: sum(round(r["per_task"][t] * n) for r in have.values()) for t in tasks}
            m = n * len(have)
            total = sum(wins.values())
            entry["rows"][f"{row} pooled"] = {
                "label": f"{row}, pooled over {', '.join(have)}", "per_task": {t: wins[t] / m for t in tasks},
                "per_task_ci95": {t: list(wilson_ci(wins[t], m)) for t in tasks},
                "average": total / (m * len(tasks)), "ci95": list(wilson_ci(total, m * len(tasks))),
                "episodes": m * len(tasks), "episodes_per_task": m,
                "wall_s_per_episode": _mean([r["wall_s_per_episode"] for r in have.values()])}
        suites[suite] = entry
    return {"protocol": {**first["protocol"], "max_steps": {s: first["protocol"]["max_steps"][s] for s in suites},
                         "checkpoint": {lb: res["protocol"]["checkpoint"] for lb, (_, res) in runs.items()},
                         "suites": list(suites)},
            "runs": {lb: {"file": path, "checkpoint": res["protocol"]["checkpoint"], "commit": res["commit"],
                          "command": res["command"], "machine": res["machine"]} for lb, (path, res) in runs.items()},
            "suites": suites, "suites_left_out": left_out}


def _mean(xs):
    return round(sum(xs) / len(xs), 2) if xs else None


def _demonstrations(pr: dict) -> str:
    d = pr.get("demonstrations")
    if not d:  # files written before the protocol recorded them
        return "demonstrations from states 20.. (see the checkpoint's config)"
    return (f"the checkpoint's demonstrations: states {d['first_state']}..{d['first_state'] + d['per_task'] - 1}, "
            f"{d['per_task']} per task, the first {d['d_act_per_task']} of each with actions")


def _by_suite(per_suite: dict, text) -> str:
    """text(n) once when every suite ran n episodes per task, else per suite."""
    if len(set(per_suite.values())) == 1:
        return text(next(iter(per_suite.values())))
    return ", ".join(f"{text(n)} ({s})" for s, n in per_suite.items())


def markdown(res: dict) -> str:
    from sof_ros.bench.meta import markdown_header, short_commit
    from sof_ros.eval import code_words, settings_words

    pr = res["protocol"]
    # rows of one suite share their episode count; suites may differ (run by separate invocations)
    per_suite = {suite: min(r["episodes_per_task"] for r in e["rows"].values()) for suite, e in res["suites"].items()}
    first = pr["first_seed"]
    lines = markdown_header("LIBERO closed-loop success (Franka Panda)", res) + [
        f"- protocol: initial states {_by_suite(per_suite, lambda n: f'{first}..{first + n - 1}')} of every task "
        f"(LIBERO's own evaluation states; {_demonstrations(pr)}), {_by_suite(per_suite, str)} episodes per task, "
        f"at most {pr['max_steps_env']} LIBERO env steps = {_by_suite(pr['max_steps'], str)} control steps at 10 Hz, "
        f"camera {pr['camera']} {pr['resolution'][0]}x{pr['resolution'][1]}; " + settings_words(pr)
        + "average = mean over tasks with the 95% Wilson interval of the pooled episodes"]
    for row, prov in res.get("rows_provenance", {}).items():
        lines.append(f"- row {row}: run at `{short_commit(prov['commit'])}` by `{prov['command']}`")
    for label, run in res.get("runs", {}).items():
        lines.append(f"- run {label}: checkpoint `{run['checkpoint']}`, `{run['file']}` (its report written at "
                     f"`{short_commit(run['commit'])}` by `{run['command']}`)")
    lines += [f"- note: {n}" for n in res.get("notes", [])]  # written by hand into the .json, rendered here
    lines += [f"- {suite} left out: {why}" for suite, why in res.get("suites_left_out", {}).items()]
    if res.get("runs"):
        lines.append("- ROW pooled: the runs' episodes together; its interval treats them as one sample, so it does "
                     "not widen for a spread between runs (the ROW@run columns show that spread)")
    for suite, entry in res["suites"].items():
        for row, r in entry["rows"].items():
            words = code_words(res.get("rows_provenance", {}).get(row, {}).get("commit", res["commit"]), r)
            if words:
                lines.append(f"- {suite} {row}: episodes run at {words}")
    lines.append("")
    for suite, entry in res["suites"].items():
        tasks = entry["tasks"]
        lines += [f"## {suite}", "", "| task | " + " | ".join(entry["rows"]) + " |", "|---|" + "---|" * len(entry["rows"])]
        for t in tasks:
            lines.append(f"| {t} | " + " | ".join(f"{r['per_task'][t]:.2f}" for r in entry["rows"].values()) + " |")
        lines.append("| **average [95% CI]** | " + " | ".join(
            f"**{r['average']:.2f}** [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]" for r in entry["rows"].values()) + " |")
        lines.append("| s/episode | " + " | ".join(f"{r['wall_s_per_episode']}" for r in entry["rows"].values()) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    def body():
        from sof_ros.bench.meta import command_line, git_commit, machine
        from sof_ros.eval import RUN_SETTINGS, eval_config, evaluate, merge, require_at_least_one
        from sof_ros.sim.libero_env import ENV_STEPS_PER_CONTROL

        p = argparse.ArgumentParser(prog="sof-bench libero", description=__doc__,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--config", default="config/libero.yaml")
        p.add_argument("--checkpoint", default="models/sof_libero")
        p.add_argument("--rows", nargs="+", help="default: the config's eval.rows")
        p.add_argument("--tasks", nargs="+", help="default: the config's eval.tasks (both suites)")
        p.add_argument("--episodes", type=int, help="initial states per task (default: eval.episodes_per_task_camera)")
        p.add_argument("--work", default="runs/eval/libero", help="sof-eval work directory (resumable)")
        p.add_argument("--workers", type=int, default=1, help="episode processes (one per CPU core; LIBERO renders "
                       "and steps on the CPU)")
        p.add_argument("--merge-only", action="store_true", help="report what --work holds, run nothing")
        p.add_argument("--combine", nargs="+", metavar="LABEL=FILE", help="results files of one protocol (e.g. "
                       "training seeds of one recipe) side by side, each row pooled over them; runs nothing")
        p.add_argument("--out", default="benchmarks/results/libero.json")
        a = p.parse_args(argv)
        require_at_least_one({"--workers": a.workers, "--episodes": a.episodes})
        provenance = {"command": command_line(), "commit": git_commit(), "machine": machine()}  # code as started
        if a.combine:
            return _write(Path(a.out), {**provenance, **combine_runs(a.combine, a.rows)}, "")
        cfg = eval_config(a.checkpoint, a.config)
        if cfg.sim.backend != "libero":
            raise SofError(f"{a.config} is not a LIBERO config (sim.backend: {cfg.sim.backend})")
        e = cfg.eval
        if a.tasks:
            e.tasks = list(a.tasks)
        if a.episodes is not None:
            e.episodes_per_task_camera = a.episodes
        rows = list(a.rows or e.rows)
        work = Path(a.work)
        if not a.merge_only:
            # recorded once evaluate has checked rows and protocol, before the first episode: a run stopped
            # by hand still names its command, and a refused one overwrites nothing
            evaluate(a.checkpoint, rows, cfg, work, episodes=e.episodes_per_task_camera, workers=a.workers,
                     started=lambda: record_provenance(work, rows, provenance))
        # what the work directory holds, as evaluate fixed it (a config's re-plan interval recorded as an
        # override: asking again with the checkpoint's own refused the merge of a run that had finished);
        # merge reads it, checks the work directory and refuses one without an evaluation
        protocol = merge(work)["protocol"]
        suites = split_by_suite(work, protocol, rows)
        if not suites:
            raise SofError(f"nothing to report: {work} holds no finished episodes")
        n = min(r["episodes_per_task"] for s in suites.values() for r in s["rows"].values())
        res = {**provenance,
               "protocol": {"suites": list(suites), "max_steps": {s: protocol["max_steps"] for s in suites},
                            "max_steps_env": protocol["max_steps"] * ENV_STEPS_PER_CONTROL, "episodes_per_task": n,
                            "first_seed": protocol["first_seed"], "camera": protocol["cameras"][0],
                            "resolution": protocol["resolution"], "checkpoint": a.checkpoint,
                            **{k: protocol[k] for k in RUN_SETTINGS if k in protocol},  # replan_every 0: each row's own
                            "demonstrations": demonstrations_of(a.checkpoint),
                            "control": "one control step = 2 LIBERO env steps (10 Hz); action 1.0 = 0.01 m of "
                                       "end-effector target (sof_ros.sim.libero_env)"},
               "suites": suites,
               # rows this report holds (a row still running in a suite is not reported, nor its command)
               "rows_provenance": {r: p for r, p in read_provenance(work).items()
                                   if any(r in s["rows"] for s in suites.values())}}
        _write(Path(a.out), res, f"; episode records: {work}")

    return run_cli(body)


def _write(out: Path, res: dict, where: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    out.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))
    print(f"results: {out} (+ .md){where}")


if __name__ == "__main__":
    main()
