"""`sof-bench flow`: optical-flow estimators on MetaWorld frames, accuracy on moving pixels vs simulator GT, and speed.

For every benchmark task the scripted expert is rolled out (fixed seed, no noise) at 128x128, the
resolution the learner's flow is computed at. From frames t = 0, stride, 2*stride, ... each estimator
sees the pair (t, t+k) for every frame gap k in --gaps (default 1, 4, 8: one control step, the
flow every stored `flow/<estimator>` holds; half and a whole skill segment, H = 8 steps) and is
scored against ground-truth flow from t to t+k computed from depth, segmentation and the body poses
at t and t+k (sof_ros.flow.gt_flow, occluded and out-of-view points excluded).

Most of a MetaWorld frame is static background, where predicting zero is exactly right, so the
headline is the end-point error (EPE, px) on moving pixels (GT magnitude > MOVING_PX), and every
EPE is printed beside the zero-flow baseline (the EPE of predicting no motion on the same pixels,
i.e. their mean GT magnitude). Buckets: static (valid, |GT| <= 0.5 px), moving (> 0.5 px), slow
(0.5 < |GT| <= 2 px: a fraction of DIS's 8-px patches, the motion coarse-to-fine estimators
smooth away first, and what one control step of a slowly moving hand or object gives at 128 px)
and fast (> 2 px).

Speed: frame pairs/s of consecutive frames at 128x128, and at 320x240 and 640x480 (the RealSense
size the camera node runs at on the real robots), one process, OpenCV limited to one thread, after
warm-up; wall clock (what a node sees on a busy machine) and per CPU second (the estimator's cost).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sof_ros.errors import SofError, run_cli

ACCURACY_SIZE = (128, 128)
SPEED_SIZES = {"128": (128, 128), "320x240": (320, 240), "640x480": (640, 480)}
GAPS = (1, 4, 8)
MOVING_PX = 0.5  # |GT| above this is motion; below it is within rendering / resampling noise at 128 px
SLOW_MAX_PX = 2.0  # slow bucket: MOVING_PX < |GT| <= SLOW_MAX_PX
BUCKETS = ("moving", "slow", "fast", "static", "all")
WARMUP_PAIRS = 3
TIMING_ROUNDS = 3  # speed = best of 3 timing rounds ...
MIN_ROUND_S = 0.5  # ... each at least this long (the pair set is repeated for fast estimators)
SPEED_TASKS = 3  # tasks rendered for the larger speed-only sizes
SPEED_PAIRS_PER_TASK = 8


@dataclass
class PairSet:
    """Frame pairs with their GT flow (gt/valid None when no GT is available, e.g. a video)."""

    frame0: list = field(default_factory=list)
    frame1: list = field(default_factory=list)
    gt: list = field(default_factory=list)
    valid: list = field(default_factory=list)
    tasks: set = field(default_factory=set)

    def add(self, f0, f1, gt=None, valid=None, task=""):
        self.frame0.append(f0)
        self.frame1.append(f1)
        self.gt.append(gt)
        self.valid.append(valid)
        self.tasks.add(task)

    def __len__(self):
        return len(self.frame0)


# --- metrics -------------------------------------------------------------------------------
def bucket_masks(gt: np.ndarray, valid: np.ndarray) -> dict[str, np.ndarray]:
    """Pixel masks of the benchmark buckets, from GT flow (H, W, 2) and its valid mask (H, W)."""
    mag = np.linalg.norm(gt, axis=-1)
    moving = valid & (mag > MOVING_PX)
    return {"moving": moving, "slow": moving & (mag <= SLOW_MAX_PX), "fast": valid & (mag > SLOW_MAX_PX),
            "static": valid & ~moving, "all": valid.copy()}


class EpeSums:
    """EPE of an estimator and of the zero-flow baseline, pooled over the pixels of many pairs per bucket."""

    def __init__(self):
        self.err = dict.fromkeys(BUCKETS, 0.0)
        self.zero = dict.fromkeys(BUCKETS, 0.0)
        self.px = dict.fromkeys(BUCKETS, 0)
        self.pairs = 0

    def add(self, flow: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> None:
        if flow.shape != gt.shape:
            raise SofError(f"estimated flow {flow.shape} and GT flow {gt.shape} differ in shape")
        err = np.linalg.norm(np.asarray(flow, np.float64) - gt, axis=-1)
        mag = np.linalg.norm(gt, axis=-1)  # = EPE of predicting zero
        for name, mask in bucket_masks(gt, valid).items():
            self.err[name] += float(err[mask].sum())
            self.zero[name] += float(mag[mask].sum())
            self.px[name] += int(mask.sum())
        self.pairs += 1

    def result(self) -> dict:
        """epe_<bucket>, zero_flow_epe_<bucket> (None for an empty bucket), <bucket>_px, pairs."""
        out: dict = {}
        for b in BUCKETS:
            n = self.px[b]
            out[f"epe_{b}"] = self.err[b] / n if n else None
            out[f"zero_flow_epe_{b}"] = self.zero[b] / n if n else None
        out.update({f"{b}_px": self.px[b] for b in BUCKETS})
        out["pairs"] = self.pairs
        return out


def accuracy(estimator, pairs: PairSet) -> dict:
    sums = EpeSums()
    for f0, f1, gt, valid in zip(pairs.frame0, pairs.frame1, pairs.gt, pairs.valid):
        if gt is not None:
            sums.add(estimator(f0, f1), gt, valid)
    return sums.result()


def speed(estimator, pairs: PairSet) -> dict:
    """Wall-clock pairs/s over TIMING_ROUNDS rounds after warm-up (best: the round least disturbed by
    other load on the machine, as timeit recommends; and the median), and pairs per CPU second of this
    process (best round): the estimator's cost, which other processes on the cores barely change."""
    for i in range(min(WARMUP_PAIRS, len(pairs))):
        estimator(pairs.frame0[i], pairs.frame1[i])
    rates, cpu_rates = [], []
    for _ in range(TIMING_ROUNDS):
        seconds, cpu, done = 0.0, 0.0, 0
        while seconds < MIN_ROUND_S:  # fast estimators: repeat the set so timer noise stays small
            start, cpu_start = time.perf_counter(), time.process_time()
            for f0, f1 in zip(pairs.frame0, pairs.frame1):
                estimator(f0, f1)
            seconds, done = seconds + time.perf_counter() - start, done + len(pairs)
            cpu += time.process_time() - cpu_start
        rates.append(done / seconds)
        cpu_rates.append(done / max(cpu, 1e-9))
    return {"best": max(rates), "median": float(np.median(rates)), "cpu": max(cpu_rates)}


# --- frames -------------------------------------------------------------------------------
def add_episode_pairs(sets: dict[int, PairSet], arr: dict, starts, task: str, with_gt: bool = True) -> None:
    """Pairs (t, t+k) for every start t and every gap k in `sets` from one episode's arrays
    (`rgb` and, with_gt, the sof_ros.flow.gt_flow.GT_KEYS)."""
    from sof_ros.flow.gt_flow import gt_flow_gap

    rgb = arr["rgb"]
    for k, pairs in sets.items():
        for t in starts:
            if t + k >= len(rgb):
                continue
            gt, valid = gt_flow_gap(arr, t, k) if with_gt else (None, None)
            pairs.add(rgb[t], rgb[t + k], gt, valid, task)


def render_episode(task: str, size: tuple[int, int], steps: int, seed: int) -> dict:
    """Expert rollout of `steps` control steps: arrays of `steps + 1` frames under the dataset keys."""
    from sof_ros.config import SimConfig
    from sof_ros.sim.metaworld_env import MetaWorldArm, expert_policy

    arm = MetaWorldArm(task, SimConfig(width=size[0], height=size[1]))
    try:
        policy = expert_policy(task)
        obs = arm.reset(seed)
        frames = [obs]
        for _ in range(steps):
            obs = arm.step(np.clip(policy.get_action(obs.state), -1, 1))
            frames.append(obs)
        return {"rgb": np.stack([o.rgb for o in frames]), "depth": np.stack([o.depth for o in frames]),
                "seg": np.stack([o.seg for o in frames]), "intrinsics": frames[0].intrinsics,
                "cam_pose": np.stack([o.cam_pose for o in frames]),
                "sim/body_pos": np.stack([o.body_pos for o in frames]),
                "sim/body_mat": np.stack([o.body_mat for o in frames]), "sim/geom_body": arm.geom_body_ids(),
                "task": arm.task}
    finally:
        arm.close()


def rendered_pairs(tasks: list[str], size: tuple[int, int], gaps, pairs_per_task: int, stride: int, seed: int,
                   with_gt: bool = True, progress: bool = True) -> dict[int, PairSet]:
    from tqdm import tqdm

    import warnings

    warnings.filterwarnings("ignore", message="Constant", module="metaworld")  # expert gain notice, harmless
    sets = {int(k): PairSet() for k in gaps}
    starts = range(0, pairs_per_task * stride, stride)
    steps = starts[-1] + max(sets)
    for task in tqdm(tasks, desc=f"render {size[0]}x{size[1]}", unit="task", disable=not progress):
        arr = render_episode(task, size, steps, seed)
        add_episode_pairs(sets, arr, starts, arr["task"], with_gt)
    return sets


def dataset_pairs(roots: list[str], gaps, stride: int) -> dict[int, PairSet]:
    """128x128 pairs every `stride` steps from existing simulated datasets (episodes without GT keys,
    such as imported videos, cannot be scored and are skipped)."""
    from sof_ros.data.dataset import Dataset
    from sof_ros.flow.gt_flow import GT_KEYS

    sets = {int(k): PairSet() for k in gaps}
    for root in roots:
        ds = Dataset(root, validate=True)
        for info in ds.episodes():
            try:
                arr = ds.load(info.path, ("rgb",) + GT_KEYS)
            except SofError:
                continue
            if arr["rgb"].shape[1:3] != ACCURACY_SIZE[::-1]:
                continue
            add_episode_pairs(sets, arr, range(0, len(arr["rgb"]) - 1, stride), info.task)
    if not any(len(s) for s in sets.values()):
        raise SofError(f"no 128x128 simulated episodes with ground-truth keys ({', '.join(GT_KEYS)}) in "
                       f"{', '.join(roots)}; record them with `sof-collect`, or drop --dataset to render frames")
    return sets


# --- the benchmark ------------------------------------------------------------------------
def estimator_rows(raft_weights: str | None) -> list[tuple[str, dict]]:
    rows = [("dis", {}), ("dis_fast", {}), ("dis_ultrafast", {}), ("farneback", {})]
    if raft_weights:
        rows.append(("raft", {"weights_path": raft_weights}))
    return rows


def run_bench(tasks: list[str], gaps, pairs_per_task: int, stride: int, seed: int, datasets: list[str] | None,
              raft_weights: str | None, progress: bool = True) -> tuple[dict, dict]:
    """Returns (estimators table in the results schema, info about the frames used)."""
    import cv2

    from sof_ros.flow.estimators import make_estimator

    cv2.setNumThreads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    estimators = [(name, make_estimator(name, **opts)) for name, opts in estimator_rows(raft_weights)]  # fail fast
    load_before = os.getloadavg()[0]
    gaps = sorted({int(k) for k in gaps} | {1})  # speed is timed on consecutive frames
    acc = (dataset_pairs(datasets, gaps, stride) if datasets else
           rendered_pairs(tasks, ACCURACY_SIZE, gaps, pairs_per_task, stride, seed, progress=progress))
    timing = {"128": acc[1]}
    for key, size in SPEED_SIZES.items():
        if key not in timing:
            timing[key] = rendered_pairs(tasks[:SPEED_TASKS], size, (1,), SPEED_PAIRS_PER_TASK, stride, seed,
                                         with_gt=False, progress=progress)[1]
    table: dict[str, dict] = {}
    for name, est in estimators:
        row: dict = {}
        for key, pairs in timing.items():
            rate = speed(est, pairs)
            row[f"pairs_per_s_{key}"] = round(rate["best"], 2)
            row[f"pairs_per_s_median_{key}"] = round(rate["median"], 2)
            row[f"pairs_per_cpu_s_{key}"] = round(rate["cpu"], 2)
        row["gaps"] = {str(k): _rounded(accuracy(est, acc[k])) for k in gaps}
        row["opencv_threads"] = 1
        table[name] = row
        if progress:
            print(f"  {name:14s} {row['pairs_per_s_128']:8.1f} pairs/s at 128  " + "  ".join(
                f"k={k}: moving {_fmt(g['epe_moving'])} (zero {_fmt(g['zero_flow_epe_moving'])})"
                for k, g in row["gaps"].items()))
    info = {"accuracy_size": f"{ACCURACY_SIZE[0]}x{ACCURACY_SIZE[1]}",
            "accuracy_frames": {str(k): {"pairs": len(acc[k]), "tasks": len(acc[k].tasks)} for k in gaps},
            "speed_frames": {key: {"pairs": len(p), "tasks": len(p.tasks)} for key, p in timing.items()},
            "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}  # other work on the cores
    return table, info


def _rounded(res: dict) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in res.items()}


def _fmt(v, nd: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{nd}f}"


def definitions() -> dict:
    return {
        "epe": "mean end-point error |F_est - F_gt| in px of the 128x128 frame, pooled over the bucket's "
               "pixels of all pairs",
        "zero_flow_epe": "the same for an estimator that outputs zero flow = mean |F_gt| over the bucket",
        "gap": "k: the estimator sees frames t and t+k; GT is the flow from t to t+k (body poses at t and t+k, "
               "occlusion tested against the depth at t+k)",
        "valid": "GT pixels that show a geom at t, land in the image at t+k in front of the camera, unoccluded",
        "moving": f"valid and |F_gt| > {MOVING_PX} px", "slow": f"{MOVING_PX} < |F_gt| <= {SLOW_MAX_PX} px",
        "fast": f"|F_gt| > {SLOW_MAX_PX} px", "static": f"valid and |F_gt| <= {MOVING_PX} px",
        "all": "all valid pixels (mostly static background: not a ranking criterion)",
        "pairs_per_s": f"consecutive-frame pairs per second, one process, cv2.setNumThreads(1), after "
                       f"{WARMUP_PAIRS} warm-up pairs, best of {TIMING_ROUNDS} rounds of >= {MIN_ROUND_S} s "
                       "(median round: pairs_per_s_median_*)",
        "pairs_per_cpu_s": "the same pairs per CPU second of the benchmark process (best round): the cost per pair, "
                           "little changed by other load on the cores",
    }


def write_results(out_dir: Path, table: dict, info: dict, command: str, commit: str, machine: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    jpath, mpath = out_dir / "flow.json", out_dir / "flow.md"
    jpath.write_text(json.dumps({"command": command, "commit": commit, "machine": machine, "estimators": table,
                                 "frames": info, "definitions": definitions()}, indent=2) + "\n")
    acc = info["accuracy_frames"]
    lines = [
        "# Optical-flow benchmark (`sof-bench flow`)", "",
        f"- command: `{command}`", f"- commit: `{commit}`", f"- machine: {machine}",
        f"- accuracy frames ({info['accuracy_size']}): " + "; ".join(
            f"k={k}: {v['pairs']} pairs from {v['tasks']} tasks" for k, v in acc.items()),
        "- EPE: mean end-point error (px) vs simulator ground truth from t to t+k; each cell is "
        "`estimator (zero-flow baseline)`, the baseline being the EPE of predicting no motion on the same pixels",
        f"- moving: |GT| > {MOVING_PX} px; slow: {MOVING_PX} < |GT| <= {SLOW_MAX_PX} px; "
        f"fast: |GT| > {SLOW_MAX_PX} px; "
        f"static: valid and |GT| <= {MOVING_PX} px (there the zero baseline is near-perfect)",
        f"- speed: consecutive-frame pairs/s, one process, `cv2.setNumThreads(1)`, after warm-up; best of "
        f"{TIMING_ROUNDS} rounds of >= {MIN_ROUND_S} s (median round in flow.json as pairs_per_s_median_*); "
        "per CPU s: pairs per CPU second of the process (cost per pair, robust to other load); "
        "frames: " + ", ".join(f"{k}: {v['pairs']} pairs" for k, v in info["speed_frames"].items())
        + "; 1-min load average before / after: " + " / ".join(map(str, info["load_average_1min"])), "",
        "| estimator | k | EPE moving | EPE slow | EPE fast | EPE static | moving px | slow px |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in table.items():
        for k, g in r["gaps"].items():
            cells = [f"{_fmt(g[f'epe_{b}'])} ({_fmt(g[f'zero_flow_epe_{b}'])})"
                     for b in ("moving", "slow", "fast", "static")]
            lines.append(f"| {name} | {k} | " + " | ".join(cells) + f" | {g['moving_px']} | {g['slow_px']} |")
    lines += ["", "| estimator | " + " | ".join(f"pairs/s {k} (per CPU s)" for k in SPEED_SIZES) + " |",
              "|---|" + "---:|" * len(SPEED_SIZES)]
    for name, r in table.items():
        cells = [f"{_fmt(r.get(f'pairs_per_s_{k}'), 1)} ({_fmt(r.get(f'pairs_per_cpu_s_{k}'), 1)})"
                 for k in SPEED_SIZES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    mpath.write_text("\n".join(lines) + "\n")
    return jpath, mpath


def main(argv=None):
    def body():
        from sof_ros.bench.meta import command_line, git_commit, machine
        from sof_ros.config import BENCHMARK_TASKS

        p = argparse.ArgumentParser(prog="sof-bench flow", description=__doc__.splitlines()[0])
        p.add_argument("--tasks", nargs="+", default=list(BENCHMARK_TASKS), help="MetaWorld tasks (default: the 11)")
        p.add_argument("--gaps", nargs="+", type=int, default=list(GAPS),
                       help="frame gaps k: pairs (t, t+k) vs GT flow from t to t+k (default: 1 4 8)")
        p.add_argument("--pairs-per-task", type=int, default=15,
                       help="start frames t per task (each gives one pair per gap)")
        p.add_argument("--stride", type=int, default=8,
                       help="control steps between start frames (default 8: t = 0..112 spans reach and manipulation)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--dataset", nargs="+", help="score on the 128x128 simulated episodes of these datasets "
                                                    "instead of rendering (speed at larger sizes is still rendered)")
        p.add_argument("--raft-weights", help="local torchvision RAFT .pth: adds a 'raft' row")
        p.add_argument("--out-dir", default="benchmarks/results", help="where flow.json / flow.md go")
        a = p.parse_args(argv)
        if a.pairs_per_task < 1 or a.stride < 1:
            raise SofError("--pairs-per-task and --stride must be at least 1")
        if min(a.gaps) < 1:
            raise SofError(f"--gaps must be positive frame gaps, got {a.gaps}")
        command = command_line()
        if not command.startswith("sof-bench"):
            command = "sof-bench flow " + " ".join(argv if argv is not None else [])
        start = time.perf_counter()
        table, info = run_bench(a.tasks, a.gaps, a.pairs_per_task, a.stride, a.seed, a.dataset, a.raft_weights)
        jpath, mpath = write_results(Path(a.out_dir), table, info, command.strip(), git_commit(), machine())
        print(mpath.read_text())
        print(f"wrote {jpath} and {mpath} in {time.perf_counter() - start:.0f} s")

    return run_cli(body)


if __name__ == "__main__":
    main()
