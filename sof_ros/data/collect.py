"""`sof-collect`: seeded scripted-expert demonstrations in MetaWorld, written as a dataset."""
from __future__ import annotations

import argparse
import math
import zlib

import numpy as np
from tqdm import tqdm

from sof_ros.config import SimConfig, load_config
from sof_ros.data.dataset import INDEX_BLOCK, Dataset
from sof_ros.errors import SofError, run_cli

POST_SUCCESS_FRAMES = 5  # keep a few frames after success so the video shows the finished task


def rollout_expert(arm, policy, seed: int, max_steps: int, noise: float, rng: np.random.Generator):
    """One expert episode; returns (observations, actions)."""
    obs = arm.reset(seed)
    if hasattr(policy, "reset"):  # LIBERO's scripted experts are programs with a position in them
        policy.reset()
    observations, actions = [obs], []
    after_success = 0
    for _ in range(max_steps):
        action = np.asarray(policy.get_action(obs.state), dtype=np.float64)
        if noise > 0:
            action[:3] += rng.normal(0.0, noise, size=3)
        action = np.clip(action, -1.0, 1.0)
        obs = arm.step(action)
        observations.append(obs)
        actions.append(action)
        if obs.success:
            after_success += 1
            if after_success > POST_SUCCESS_FRAMES:
                break
    return observations, np.asarray(actions, dtype=np.float32)


def noise_generator(task: str, ep_seed: int) -> np.random.Generator:
    """The expert's action noise for one episode, from its task and seed alone, so an episode is
    the same whichever process collects it and whatever that process collected before."""
    return np.random.default_rng([int(ep_seed), zlib.crc32(task.encode())])


def d_act_count(act_fraction: float, episodes_per_task: int) -> int:
    """How many of a (task, camera)'s first episodes sof-collect flags in_d_act."""
    return math.ceil(act_fraction * episodes_per_task)


def episode_arrays(observations, geom_body: np.ndarray) -> dict[str, np.ndarray]:
    """Frames, camera, proprioception and body poses; depth and segmentation when they were rendered."""
    out = {"rgb": np.stack([o.rgb for o in observations])}
    if observations[0].depth is not None:
        out["depth"] = np.stack([o.depth for o in observations]).astype(np.float32)
        out["seg"] = np.stack([o.seg for o in observations]).astype(np.int16)
    return out | {
        "intrinsics": observations[0].intrinsics,
        "cam_pose": np.stack([o.cam_pose for o in observations]),
        "ee_pos": np.stack([o.ee_pos for o in observations]),
        "gripper": np.array([o.gripper for o in observations], dtype=np.float32),
        "sim/body_pos": np.stack([o.body_pos for o in observations]),
        "sim/body_mat": np.stack([o.body_mat for o in observations]),
        "sim/geom_body": geom_body,
    }


def collect(out: str, tasks: list[str], episodes_per_task: int, seed: int, sim: SimConfig,
            act_fraction: float = 0.2, noise: float = 0.1, camera: str | list[str] | None = None,
            only_successful: bool = False, progress: bool = True, depth: bool = True,
            index_block: int | None = None) -> dict[str, float]:
    """Collect episodes; returns per-task expert success rate (over all cameras).

    `camera` may be a list: every camera gets its own episodes (its own seeds, never another
    camera's scene seen from elsewhere): camera i of the list uses seeds `seed + i * episodes_per_task + k`,
    each episode's expert noise drawn from its task and seed alone (`noise_generator`), so collecting
    the cameras or the tasks in separate processes (`--cameras X --camera-index i`, `--block i`)
    gives the same episodes as collecting them together; those processes may share `out`, each
    numbering its episodes in its own block (`index_block` = i). The first
    `act_fraction` of every (task, camera) are flagged in_d_act. `depth=False` renders RGB only."""
    if episodes_per_task < 1:
        raise SofError("--episodes must be at least 1")
    if not 0.0 <= act_fraction <= 1.0:
        raise SofError(f"--act-fraction must be in [0, 1], got {act_fraction}")
    from sof_ros.sim import backend_of, make_arm, make_expert

    cameras = list(enumerate(camera if isinstance(camera, list) else [camera or sim.camera]))
    ds = Dataset.create(out)
    index = ds.next_index(index_block)
    n_act = d_act_count(act_fraction, episodes_per_task)
    rates: dict[str, list[int]] = {}
    bar = tqdm(total=len(tasks) * episodes_per_task * len(cameras), desc="collect", unit="ep", disable=not progress)
    for cam_index, camera in cameras:
        first = seed + cam_index * episodes_per_task
        for task in tasks:
            arm = make_arm(task, sim, camera=camera, with_depth=depth)
            policy = make_expert(task, sim)
            geom_body = arm.geom_body_ids()
            successes = 0
            for k in range(episodes_per_task):
                ep_seed = first + k
                observations, actions = rollout_expert(arm, policy, ep_seed, sim.max_steps, noise,
                                                       noise_generator(arm.task, ep_seed))
                success = observations[-1].success
                successes += int(success)
                bar.update(1)
                bar.set_postfix(task=task, camera=camera, success=f"{successes}/{k + 1}")
                if only_successful and not success:
                    continue
                attrs = dict(task=arm.task, instruction=arm.instruction, source=backend_of(sim),
                             success=bool(success), seed=int(ep_seed), camera=arm.camera,
                             in_d_act=bool(k < n_act))
                ds.write_episode(index, attrs, episode_arrays(observations, geom_body), actions)
                index += 1
            rates.setdefault(arm.task, []).append(successes)
            arm.close()
    bar.close()
    return {t: sum(v) / (episodes_per_task * len(v)) for t, v in rates.items()}


def main(argv=None):
    def body():
        p = argparse.ArgumentParser(description=__doc__)
        p.add_argument("--out", required=True, help="dataset directory (created if missing, appended to if present)")
        p.add_argument("--config", help="YAML config (sections sim, collect)")
        p.add_argument("--tasks", nargs="+", help="MetaWorld task names (default: the 11-task benchmark suite)")
        p.add_argument("--episodes", type=int, help="episodes per task")
        p.add_argument("--seed", type=int, help="first seed; episode k of a task uses seed+k")
        p.add_argument("--cameras", "--camera", nargs="+", help="MetaWorld cameras (corner, corner2, corner3, "
                       "topview, ...); default: the config's collect.cameras")
        p.add_argument("--camera-index", type=int, help="with one camera: its place in the full camera list "
                       "(seeds seed + index * episodes), to collect cameras in parallel processes, into one --out "
                       f"(episodes numbered from index * {INDEX_BLOCK})")
        p.add_argument("--block", type=int, help=f"number this process's episodes from block * {INDEX_BLOCK}, so "
                       "processes collecting different --tasks can write one --out at once (each task's expert "
                       "noise then continues from the tasks before it in that process only)")
        p.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), help="image size")
        p.add_argument("--act-fraction", type=float, help="share of episodes per task marked as D_act")
        p.add_argument("--only-successful", action="store_true", help="drop failed expert episodes")
        a = p.parse_args(argv)
        cfg = load_config(a.config)
        if a.size:
            cfg.sim.width, cfg.sim.height = a.size
        c = cfg.collect
        cameras = a.cameras or c.cameras
        n = a.episodes or c.episodes_per_task
        seed = c.seed if a.seed is None else a.seed
        if a.camera_index is not None:
            if len(cameras) != 1:
                raise SofError("--camera-index goes with exactly one --cameras entry")
            seed += a.camera_index * n
        if a.block is not None and a.camera_index is not None:
            raise SofError("--block and --camera-index both choose the episode numbers; give one")
        rates = collect(a.out, a.tasks or c.tasks, n, seed, cfg.sim,
                        c.act_fraction if a.act_fraction is None else a.act_fraction,
                        c.expert_noise, list(cameras), a.only_successful or c.only_successful,
                        depth=c.depth, index_block=a.camera_index if a.block is None else a.block)
        print("expert success per task:")
        for task, rate in rates.items():
            print(f"  {task:24s} {rate:.2f}")
        print(f"dataset: {a.out}")

    run_cli(body)


if __name__ == "__main__":
    main()
