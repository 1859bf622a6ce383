"""Where does a learned row's hand go on a stove-knob task? A diagnostic, not a benchmark.

Runs a row of a LIBERO checkpoint on `turn_on_the_stove` (or KITCHEN_SCENE3) from LIBERO's
evaluation initial states, as sof-eval does (greedy plans, the checkpoint's re-plan interval), and
prints per episode how close the hand came (in the table's plane) to the end of the knob's bar
where the scripted expert starts its sweep, and how far the knob turned. Used for
benchmarks/results/libero_knob_demos.md's note:

    .venv/bin/python scripts/trace_knob.py --checkpoint runs/lib6/ckpt --row sof --seeds 0 1 2
"""
from __future__ import annotations

import argparse

import numpy as np

import sof_ros  # noqa: F401  (sets MUJOCO_GL before anything imports mujoco)

KNOB = "flat_stove_1_button"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--row", default="sof")
    ap.add_argument("--task", default="turn_on_the_stove")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args(argv)

    import torch

    from sof_ros.config import load_config
    from sof_ros.policies import load_policy
    from sof_ros.sim import make_arm

    torch.set_num_threads(1)
    cfg = load_config(f"{args.checkpoint}/config.yaml")
    policy = load_policy(args.row, args.checkpoint, "cpu", None, task=args.task, eval_cfg=cfg.eval)
    arm = make_arm(args.task, cfg.sim, camera=cfg.sim.camera, with_depth=False)
    try:
        for seed in args.seeds:
            obs = arm.reset(seed)
            policy.reset()
            s = arm.state()
            end = s.to_base(s.data().xanchor[s.model.joint(KNOB).id])
            end[0] -= 0.035  # where the expert's sweep starts: 3/4 of the bar's half-length towards the robot
            closest, plan = (np.inf, -1), None
            for step in range(int(cfg.eval.max_steps)):
                inp = obs.agent_input()
                if step % policy.replan_every == 0:
                    plan = policy.plan(inp, arm.instruction)
                obs = arm.step(policy.act(plan, inp, step % policy.replan_every))
                d = float(np.linalg.norm(obs.state.ee_pos[:2] - end[:2]))
                closest = min(closest, (d, step))
                if obs.success:
                    break
            print(f"{args.row} state {seed}: success {bool(obs.success)}, hand closest to the bar's end "
                  f"{closest[0] * 100:.1f} cm (step {closest[1]}), knob {obs.state.joint_qpos(KNOB):.2f} rad", flush=True)
    finally:
        arm.close()


if __name__ == "__main__":
    main()
