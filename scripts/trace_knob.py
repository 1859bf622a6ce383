"""Where does a learned row's hand go on a stove-knob task? A diagnostic, not a benchmark.

Runs a row of a LIBERO checkpoint on `turn_on_the_stove` (or KITCHEN_SCENE3) from LIBERO's
evaluation initial states through sof-eval's own `rollout` (greedy plans, the checkpoint's re-plan interval), and
prints per episode how close the hand came (in the table's plane) to the end of the knob's bar
where the scripted expert starts its sweep, and how far the knob turned. Used for
benchmarks/results/libero_knob_demos.md's note:

    .venv/bin/python scripts/trace_knob.py --checkpoint runs/lib6/ckpt --row sof --seeds 0 1 2
"""
from __future__ import annotations

import argparse

import numpy as np

import sof_ros  # noqa: F401  (sets MUJOCO_GL before anything imports mujoco)

STOVE = "flat_stove_1"  # the stove of LIBERO-GOAL's and LIBERO-10's knob tasks


def sweep_start(state, stove: str = STOVE) -> tuple[np.ndarray, str]:
    """Where the scripted expert starts its sweep (the bar's end between the open fingers) and the
    knob's joint, from the expert's own geometry (sof_ros.sim.libero_experts.knob_sweep)."""
    from sof_ros.errors import SofError
    from sof_ros.sim.libero_experts import knob_sweep

    if stove not in state.objects:
        raise SofError(f"this task has no {stove}; trace a task with the stove knob: turn_on_the_stove or "
                       "KITCHEN_SCENE3_turn_on_the_stove_and_put_the_moka_pot_on_it")
    sweep = knob_sweep(state, stove)
    return sweep.point(sweep.q0, 0.0, 0.0), sweep.joint


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--row", default="sof")
    ap.add_argument("--task", default="turn_on_the_stove")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--max-steps", type=int, help="default: the checkpoint's eval.max_steps")
    args = ap.parse_args(argv)

    import torch

    from sof_ros.config import load_config
    from sof_ros.eval import rollout
    from sof_ros.policies import load_policy
    from sof_ros.sim import make_arm

    torch.set_num_threads(1)
    cfg = load_config(f"{args.checkpoint}/config.yaml")
    policy = load_policy(args.row, args.checkpoint, "cpu", None, task=args.task, eval_cfg=cfg.eval)
    arm = make_arm(args.task, cfg.sim, camera=cfg.sim.camera, with_depth=False)
    try:
        for seed in args.seeds:
            closest = [(np.inf, -1)]
            end, knob_joint = sweep_start(arm.reset(seed).state)  # in this initial state

            def note(step, obs):
                closest[0] = min(closest[0], (float(np.linalg.norm(obs.state.ee_pos[:2] - end[:2])), step))

            ok, _, _, _ = rollout(arm, seed, args.max_steps or int(cfg.eval.max_steps), policy, on_step=note)
            (d, step), knob = closest[0], arm.state().joint_qpos(knob_joint)
            print(f"{args.row} state {seed}: success {ok}, hand closest to the bar's end "
                  f"{d * 100:.1f} cm (step {step}), knob {knob:.2f} rad", flush=True)
    finally:
        arm.close()


if __name__ == "__main__":
    from sof_ros.errors import run_cli

    run_cli(main)
