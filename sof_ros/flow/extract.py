"""`sof-flow`: estimate optical flow for every episode of a dataset and store it as `flow/<estimator>`.

Resumable (episodes that already hold `flow/<estimator>` are skipped unless --force) and crash-safe:
each episode is rebuilt into a temporary file next to it (HDF5-level copy of the existing data plus
the new flow) and renamed over the original, so an interrupted run never leaves a half-written file.
One worker process owns one episode at a time.
"""
from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from tqdm import tqdm

from sof_ros.data.dataset import flow_key
from sof_ros.errors import SofError, run_cli

VIZ_EVERY = 8  # frame pairs between visualised pairs (PNG per pair and strip columns)
_TMP_TAG = ".sofflow.tmp"
_estimator_cache: dict = {}


def _estimator(name: str, opts: dict):
    from sof_ros.flow.estimators import make_estimator

    key = (name, tuple(sorted(opts.items())))
    if key not in _estimator_cache:
        _estimator_cache[key] = make_estimator(name, **opts)
    return _estimator_cache[key]


def _worker_init(threads: int, parent_pid: int) -> None:
    """Pin OpenCV/torch threads: N processes x M threads must not oversubscribe the cores. The worker
    goes when the sof-flow process that started it goes."""
    import cv2

    from sof_ros.procs import worker_dies_with

    worker_dies_with(parent_pid)

    cv2.setNumThreads(threads)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass


def estimate_episode(rgb: np.ndarray, estimator, gap: int = 1) -> np.ndarray:
    """(T, H, W, 3) frames -> (T-gap, H, W, 2) float32 flow from each frame t to frame t+gap."""
    return np.stack([estimator(rgb[t], rgb[t + gap]) for t in range(len(rgb) - gap)])


def _write_flow(path: Path, key: str, flow: np.ndarray) -> None:
    """Rebuild the episode with `flow/<key>` replaced, into a temp file, then rename it over."""
    import h5py

    from sof_ros.data.dataset import _open

    tmp = path.with_name(path.name + _TMP_TAG)
    try:
        with _open(path) as src, h5py.File(tmp, "w") as dst:
            for k, v in src.attrs.items():
                dst.attrs[k] = v
            for name in src:
                if name != "flow":
                    src.copy(src[name], dst, name=name)  # raw chunk copy: no recompression
            group = dst.create_group("flow")
            if "flow" in src:
                for name in src["flow"]:
                    if name != key:
                        src.copy(src["flow"][name], group, name=name)
            group.create_dataset(key, data=flow.astype(np.float16), chunks=(1,) + flow.shape[1:],
                                 compression="gzip", compression_opts=4, shuffle=True)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_viz(viz_dir: Path, path: Path, rgb: np.ndarray, flow: np.ndarray, task: str, key: str,
              every: int = VIZ_EVERY) -> None:
    """Colour-wheel and arrow PNGs for every `every`-th pair, and one strip PNG for the episode."""
    from sof_ros.flow.viz import arrow_image, episode_strip, flow_to_color, save_png

    stem = f"{path.stem}_{task}_{key}"
    scale = max(float(np.nanpercentile(np.linalg.norm(flow, axis=-1), 99.5)), 1e-3)
    for t in range(0, len(flow), every):
        save_png(viz_dir / stem / f"color_t{t:03d}.png", flow_to_color(flow[t], scale))
        save_png(viz_dir / stem / f"arrows_t{t:03d}.png", arrow_image(rgb[t], flow[t], max_magnitude=scale))
    save_png(viz_dir / f"{stem}_strip.png", episode_strip(rgb, flow, every=every, max_magnitude=scale))


def process_episode(path: str, name: str, opts: dict, extract: bool, viz_dir: str | None,
                    gap: int = 1) -> tuple[str, int, float]:
    """Worker body: estimate + write flow (extract=True) and/or render PNGs; returns (path, pairs, s)."""
    from sof_ros.data.dataset import _open

    path = Path(path)
    start = time.perf_counter()
    with _open(path) as f:
        rgb = f["rgb"][()]
        task = str(f.attrs.get("task", "episode"))
        key = flow_key(_estimator(name, opts).name, gap) if extract else name
        stored = f[f"flow/{key}"][()].astype(np.float32) if not extract else None
    if extract:
        flow = estimate_episode(rgb, _estimator(name, opts), gap)
        _write_flow(path, key, flow)
    else:
        flow = stored
    if viz_dir:
        write_viz(Path(viz_dir), path, rgb, flow, task, key)
    return str(path), (len(rgb) - gap) if extract else 0, time.perf_counter() - start


def extract_dataset(root: str | Path, estimator_name: str = "dis", workers: int | None = None,
                    viz_dir: str | Path | None = None, force: bool = False, progress: bool = True,
                    preset: str | None = None, raft_weights: str | None = None, device: str = "cpu",
                    gap: int = 1) -> dict:
    """Fill `flow/<estimator>` in every episode of `root`; returns a summary dict.

    The key is the estimator's name: `dis` (medium preset), `dis_fast`, `dis_ultrafast`, `farneback`, `raft`;
    with `gap` k > 1 the flow is from frame t to t+k (T-k fields) under `<name>_k<k>`.
    """
    from sof_ros.config import FlowConfig
    from sof_ros.data.dataset import Dataset, _open

    ds = Dataset(root, validate=True)
    workers = FlowConfig().workers if workers is None else int(workers)
    if workers < 1:
        raise SofError(f"--workers must be at least 1, got {workers}")
    opts = {}
    if preset:
        opts["preset"] = preset
    if raft_weights:
        opts["weights_path"] = str(raft_weights)
    if estimator_name == "raft":
        opts["device"] = device
    if gap < 1:
        raise SofError(f"--gap must be at least 1, got {gap}")
    key = flow_key(_estimator(estimator_name, opts).name, gap)  # fail fast: unknown name, missing RAFT weights
    for stale in (ds.root / "episodes").glob("*" + _TMP_TAG):  # left by a killed run
        stale.unlink()
    jobs = []
    skipped = 0
    for path in ds.episode_paths():
        with _open(path) as f:
            has = f"flow/{key}" in f
        if has and not force:
            skipped += 1
            if viz_dir:
                jobs.append((str(path), key, opts, False, str(viz_dir), gap))
            continue
        jobs.append((str(path), estimator_name, opts, True, str(viz_dir) if viz_dir else None, gap))
    n_extract = sum(1 for j in jobs if j[3])
    start = time.perf_counter()
    pairs = 0
    bar = tqdm(total=len(jobs), desc=f"flow/{key}", unit="ep", disable=not progress)
    if workers == 1 or len(jobs) <= 1:
        for job in jobs:
            pairs += process_episode(*job)[1]
            bar.update(1)
    else:
        import multiprocessing

        # spawn, not fork: a forked child can inherit OpenCV/OpenMP thread-pool locks held by the parent
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), initializer=_worker_init, initargs=(1, os.getpid()),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(process_episode, *job) for job in jobs]
            try:
                for fut in as_completed(futures):
                    pairs += fut.result()[1]
                    bar.update(1)
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise
    bar.close()
    seconds = time.perf_counter() - start
    return {"estimator": key, "episodes": len(ds.episode_paths()), "extracted": n_extract, "skipped": skipped,
            "pairs": pairs, "seconds": seconds, "viz_dir": str(viz_dir) if viz_dir else None}


def main(argv=None):
    def body():
        from sof_ros.config import load_config

        p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        p.add_argument("dataset", help="dataset directory (from sof-collect or sof-import-videos)")
        p.add_argument("--config", help="YAML config (section flow)")
        p.add_argument("--estimator", help="dis | dis_fast | dis_ultrafast | farneback | raft (default: config, dis)")
        p.add_argument("--preset", choices=("ultrafast", "fast", "medium"), help="DIS preset (key dis_<preset>, medium = dis)")
        p.add_argument("--raft-weights", help="local torchvision RAFT .pth (never downloaded)")
        p.add_argument("--device", default="cpu", help="torch device for RAFT")
        p.add_argument("--workers", type=int, help="worker processes (default: config flow.workers)")
        p.add_argument("--viz", metavar="OUTDIR", help="also write colour-wheel, arrow and strip PNGs here")
        p.add_argument("--force", action="store_true", help="recompute episodes that already hold this flow")
        p.add_argument("--gap", type=int, help="flow from frame t to t+GAP (key <estimator>_k<GAP> when > 1); "
                       "default: the config's skill.stride, the gap sof-train reads")
        a = p.parse_args(argv)
        full = load_config(a.config)
        cfg = full.flow
        gap = a.gap if a.gap is not None else full.skill.stride
        name = a.estimator or cfg.estimator
        if a.preset and not name.startswith("dis"):
            raise SofError(f"--preset only applies to the DIS estimator, not '{name}'")
        summary = extract_dataset(a.dataset, name, a.workers or cfg.workers, a.viz, a.force, True,
                                  preset=a.preset, raft_weights=a.raft_weights or cfg.raft_weights, device=a.device,
                                  gap=gap)
        rate = f", {summary['pairs'] / summary['seconds']:.1f} pairs/s" if summary["pairs"] else ""
        print(f"flow/{summary['estimator']}: {summary['extracted']} episodes extracted, {summary['skipped']} "
              f"already present (skipped) of {summary['episodes']}; {summary['seconds']:.1f} s{rate}")
        if a.viz:
            print(f"visualisations: {a.viz}")

    run_cli(body)


if __name__ == "__main__":
    main()
