"""`sof-bench <benchmark> [options]`: one entry point for all benchmarks.

To add one, put a module with `main(argv)` and a docstring in sof_ros/bench/ and list it in
BENCHMARKS; modules are imported only when their benchmark is run.
"""
from __future__ import annotations

import importlib
import sys

from sof_ros.errors import SofError, run_cli

BENCHMARKS: dict[str, str] = {
    "flow": "sof_ros.bench.flow_bench",  # estimator speed and EPE vs simulator ground truth
    "loop": "sof_ros.bench.loop_bench",  # camera frame -> end-effector command latency through DDS
    "d_act": "sof_ros.bench.d_act",  # learned Flow2Action success vs action-labelled set size
    "libero": "sof_ros.bench.libero",  # LIBERO-GOAL / LIBERO-10 success per task and row (Franka Panda)
    "transfer": "sof_ros.bench.transfer",  # cross-embodiment: Stages 1-2 from one arm's videos drive another arm
    "replan": "sof_ros.bench.replan",  # MetaWorld success vs the number of control steps between plans
    "graph": "sof_ros.bench.graph_parity",  # the same episodes in process and through the ROS graph (masks, rendering)
    "train": "sof_ros.bench.train_speed",  # seconds per training step and stage, on CPU or CUDA
}


def _usage() -> str:
    return "usage: sof-bench {" + ",".join(BENCHMARKS) + "} [options]   (sof-bench NAME --help for options)"


def main(argv: list[str] | None = None):
    argv = list(sys.argv[1:] if argv is None else argv)

    def body():
        if not argv or argv[0] in ("-h", "--help"):
            print(_usage())
            for name, module in BENCHMARKS.items():
                print(f"  {name:8s} {module}")
            return
        name, rest = argv[0], argv[1:]
        if name not in BENCHMARKS:
            raise SofError(f"unknown benchmark '{name}'; choose one of: {', '.join(BENCHMARKS)}")
        module = importlib.import_module(BENCHMARKS[name])
        return module.main(rest)

    return run_cli(body)


if __name__ == "__main__":
    main()
