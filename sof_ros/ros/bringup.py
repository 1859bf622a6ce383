"""sof-bringup: start the SOF graph without `ros2 launch`, from the same graph description.

    sof-bringup sim|panda|sawyer [--instruction TEXT] [--task T] [--seconds N] [--record FILE.mcap]
                                 [--composed] [--camera-source S] [--checkpoint DIR]
                                 [--param NODE.KEY=VALUE ...] [--until-success | --until-done] [--until-commands N]
                                 [--summary FILE.json]
                                 [--log-dir DIR] [--dry-run]

Default: one process per node (`python -m sof_ros.ros.<node> --ros-args -r __node:=NAME
--params-file config/<robot>.yaml --params-file <overrides>.yaml`), i.e. exactly what the launch
files start. `--composed`: all nodes in this process on one SingleThreadedExecutor.

The bringup process also runs a small monitor node: it publishes the instruction (reliable,
transient local), counts tokens / flow plans / commands, measures frame-to-command latency from the
command header stamps and, in sim, watches task success. At the end it prints a one-line JSON
summary (and writes it to --summary). Exit code: 0; 1 if a node process died, or if --until-success
was given and the task did not succeed in time; 2 for a configuration error.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from sof_ros.embodiment import checkpoint_problem
from sof_ros.errors import SofError, run_cli
from sof_ros.ros import graph
from sof_ros.ros import params as P

NODE_CLASSES = {
    "sof_sim_bridge": "SimBridgeNode",
    "sof_camera": "CameraNode",
    "sof_policy": "PolicyNode",
    "sof_flow2action": "Flow2ActionNode",
    "sof_recorder": "RecorderNode",
}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="sof-bringup", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("robot", choices=list(graph.ROBOTS))
    ap.add_argument("--instruction", default="", help="instruction to publish (default in sim: the task's own)")
    ap.add_argument("--task", default="", help="sim / --sim: simulator task (default: config/sim.yaml, config/panda_sim.yaml)")
    ap.add_argument("--sim", default="", help="panda: 'libero' runs the graph against the LIBERO Panda instead of the real "
                    "arm and camera (config/panda.yaml + config/panda_sim.yaml)")
    ap.add_argument("--seconds", type=float, default=0.0, help="run this long, then stop (0: until Ctrl-C)")
    ap.add_argument("--record", default="", metavar="FILE.mcap", help="record the main topics to an MCAP file")
    ap.add_argument("--composed", action="store_true", help="all nodes in this process, on one executor thread")
    ap.add_argument("--camera-source", default="", choices=["", *graph.CAMERA_SOURCES])
    ap.add_argument("--checkpoint", default="", help="SOF checkpoint directory (default: from the YAML)")
    ap.add_argument("--param", action="append", default=[], metavar="NODE.KEY=VALUE",
                    help="extra parameter override, value in YAML syntax (repeatable), e.g. sof_sim_bridge.seed=3")
    ap.add_argument("--until-success", action="store_true", help="sim: stop as soon as the task succeeds")
    ap.add_argument("--until-done", action="store_true", help="sim: stop at success or when the episode reached the "
                    "sim bridge's max_steps (one whole episode, whatever the CPU's speed; summary: success, sim_steps)")
    ap.add_argument("--until-commands", type=int, default=0,
                    help="stop once this many non-zero commands were seen (--seconds is then the limit): a run "
                         "measured in work done, not in wall-clock time, which depends on how busy the CPU is")
    ap.add_argument("--summary", default="", metavar="FILE.json", help="write the run summary here")
    ap.add_argument("--log-dir", default="", help="write each node process's output to DIR/<node>.log")
    ap.add_argument("--dry-run", action="store_true", help="print the node commands and exit")
    return ap


def parse_params(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SofError(f"--param must be NODE.KEY=VALUE, got '{item}'")
        out[key.strip()] = yaml.safe_load(value)
    return out


def make_plan(ns: argparse.Namespace) -> list[graph.NodeSpec]:
    return graph.plan(ns.robot, camera_source=ns.camera_source, checkpoint=ns.checkpoint, task=ns.task,
                      record=ns.record, params=parse_params(ns.param), sim=ns.sim)


def write_overrides(specs: list[graph.NodeSpec], directory: str | Path) -> Path:
    path = Path(directory) / "sof_overrides.yaml"
    data = {s.name: {"ros__parameters": P.unflatten(s.overrides)} for s in specs if s.overrides}
    path.write_text(yaml.safe_dump(data, sort_keys=True))
    return path


def ros_args(spec: graph.NodeSpec, overrides_file: Path) -> list[str]:
    return ["--ros-args", "-r", f"__node:={spec.name}", "--params-file", spec.params_file,
            "--params-file", str(overrides_file)]


def process_commands(specs: list[graph.NodeSpec], overrides_file: Path) -> list[tuple[str, list[str]]]:
    return [(s.name, [sys.executable, "-m", s.module, *ros_args(s, overrides_file)]) for s in specs]


def default_instruction(ns: argparse.Namespace, specs: list[graph.NodeSpec]) -> str:
    if ns.instruction:
        return ns.instruction
    bridge = next((s for s in specs if s.name == "sof_sim_bridge"), None)
    if bridge is not None:  # robot sim, or a robot's sim mode: the simulator task's own instruction
        from sof_ros.config import SimConfig
        from sof_ros.sim import instruction_for

        eff = bridge.effective()
        return instruction_for(eff["task"], SimConfig(backend=eff["sim"], suite=eff["suite"]))
    if ns.task:
        from sof_ros.sim.metaworld_env import instruction_for

        return instruction_for(ns.task)
    return ""


def check_checkpoint(specs: list[graph.NodeSpec]) -> None:
    """Fail before starting anything when the policy's checkpoint is missing (clearer than a node
    process exiting with the same message among the others' logs)."""
    for spec in specs:
        if spec.name not in ("sof_policy", "sof_flow2action"):
            continue
        eff = spec.effective()
        problem = None if ":" in eff["agent.policy"] else checkpoint_problem(eff["agent.checkpoint"])
        if problem:
            raise SofError(f"{problem}; sof-bringup takes it as --checkpoint DIR")


# --- monitor ------------------------------------------------------------------------------------
def make_monitor(specs: list[graph.NodeSpec], instruction: str, **node_kwargs):
    """A node that publishes the instruction and watches the graph's outputs."""
    from geometry_msgs.msg import TwistStamped
    from rclpy.node import Node
    from sensor_msgs.msg import Image
    from std_msgs.msg import Bool, Int32, Int64MultiArray, String
    from visualization_msgs.msg import MarkerArray

    from sof_ros.ros import conversions as cv
    from sof_ros.ros.base import command_qos, latched_qos, sensor_qos

    eff = {s.name: s.effective() for s in specs}
    f2a, pol = eff["sof_flow2action"], eff["sof_policy"]

    class Monitor(Node):
        def __init__(self):
            super().__init__("sof_bringup", **node_kwargs)
            self.t0 = time.monotonic()
            # frames, tokens and flow_plans count distinct stamps: a frame the sim bridge sends again
            # (lockstep) and a plan the policy sends again (plan_request) are one control step and one
            # plan, counted apart as frames_repeated / tokens_resent / flow_plans_resent; the others
            # count messages
            self.counts = {k: 0 for k in ("frames", "frames_repeated", "tokens", "tokens_resent", "flow_plans",
                                          "flow_plans_resent", "plan_images", "markers", "commands",
                                          "nonzero_commands")}
            self.latency_ms: list[float] = []
            self._frame_stamps: dict[int, None] = {}
            self._plan_stamps: dict[int, None] = {}
            self._token_stamps: dict[int, None] = {}
            self.success = False
            self.success_after_s = None
            self.last_status = ""
            self.last_tokens: list[int] = []
            self.pub_instruction = self.create_publisher(String, pol["instruction_topic"], latched_qos())
            if instruction:
                self.pub_instruction.publish(String(data=instruction))
                self.get_logger().info(f"instruction: '{instruction}'")
            cq = command_qos(50)
            self.create_subscription(Image, pol["image_topic"], self._on_frame, sensor_qos(5))
            self.create_subscription(Int64MultiArray, pol["tokens_topic"], self._on_tokens, cq)
            self.create_subscription(Image, pol["flow_plan_topic"], self._on_flow_plan, cq)
            self.create_subscription(Image, pol["plan_image_topic"], lambda m: self._count("plan_images"), cq)
            self.create_subscription(MarkerArray, pol["markers_topic"], lambda m: self._count("markers"), cq)
            self.create_subscription(TwistStamped, f2a["twist_topic"], self._on_twist, cq)
            self.create_subscription(Int64MultiArray, f2a["command_info_topic"], self._on_command_info, cq)
            self.create_subscription(String, f2a["status_topic"], self._on_status, cq)
            self.sim_steps = None  # control steps of the simulated episode, as the sim bridge last said
            self.episode_over = False
            if "sof_sim_bridge" in eff:
                bridge = eff["sof_sim_bridge"]
                self.max_steps = int(bridge["max_steps"])
                self.create_subscription(Bool, bridge["success_topic"], self._on_success, latched_qos())
                self.create_subscription(Int32, bridge["steps_topic"], self._on_steps, latched_qos())

        def _count(self, key):
            self.counts[key] += 1

        def _count_stamp(self, msg, seen: dict, key: str, again: str, stamp: int | None = None) -> None:
            stamp = cv.stamp_to_ns(msg.header.stamp) if stamp is None else stamp
            self.counts[again if stamp in seen else key] += 1
            seen[stamp] = None
            while len(seen) > 1000:
                seen.pop(next(iter(seen)))

        def _on_frame(self, msg):
            self._count_stamp(msg, self._frame_stamps, "frames", "frames_repeated")

        def _on_flow_plan(self, msg):
            self._count_stamp(msg, self._plan_stamps, "flow_plans", "flow_plans_resent")

        def _on_tokens(self, msg):
            try:
                tokens, stamp, *_ = cv.msg_to_tokens(msg)
            except cv.ConversionError:
                self.counts["tokens"] += 1  # malformed: the Flow2Action node says why; counted as a message
                return
            self._count_stamp(msg, self._token_stamps, "tokens", "tokens_resent", stamp)
            self.last_tokens = tokens.tolist()

        def _on_twist(self, msg):
            self.counts["commands"] += 1
            lin, ang = cv.twist_to_arrays(msg)
            if np.any(lin) or np.any(ang):
                self.counts["nonzero_commands"] += 1

        def _on_command_info(self, msg):
            try:
                stamp = cv.msg_to_command_info(msg).frame_stamp_ns
            except cv.ConversionError:
                return
            if stamp in self._frame_stamps:  # answers a camera frame (not a watchdog zero)
                self.latency_ms.append((self.get_clock().now().nanoseconds - stamp) / 1e6)

        def _on_status(self, msg):
            self.last_status = msg.data

        def _on_steps(self, msg):
            self.sim_steps = int(msg.data)
            if self.max_steps and self.sim_steps >= self.max_steps and not self.episode_over:
                self.episode_over = True
                self.get_logger().info(f"episode over after {self.sim_steps} steps")

        def _on_success(self, msg):
            if msg.data and not self.success:
                self.success = True
                self.success_after_s = round(time.monotonic() - self.t0, 2)
                self.get_logger().info(f"task success after {self.success_after_s} s")

        def summary(self) -> dict:
            lat = np.asarray(self.latency_ms)
            return {
                "counts": dict(self.counts),
                "success": self.success,
                "success_after_s": self.success_after_s,
                "sim_steps": self.sim_steps,
                "latency_ms": ({"p50": round(float(np.percentile(lat, 50)), 2), "p95": round(float(np.percentile(lat, 95)), 2),
                                "n": int(lat.size)} if lat.size else None),
                "last_status": self.last_status,
                "last_tokens": self.last_tokens,
            }

    return Monitor()


# --- running ------------------------------------------------------------------------------------
def _should_stop(ns, monitor, deadline) -> bool:
    if (ns.until_success or ns.until_done) and monitor.success:
        return True
    if ns.until_done and monitor.episode_over:
        return True
    if ns.until_commands > 0 and monitor.counts["nonzero_commands"] >= ns.until_commands:
        return True
    return deadline is not None and time.monotonic() >= deadline


def run_processes(ns, specs, overrides_file: Path, instruction: str) -> tuple[dict, int]:
    import rclpy

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    procs: list[tuple[str, subprocess.Popen, object]] = []
    log_dir = Path(ns.log_dir) if ns.log_dir else None
    if log_dir:
        log_dir.mkdir(parents=True, exist_ok=True)
    for name, cmd in process_commands(specs, overrides_file):
        out = open(log_dir / f"{name}.log", "w") if log_dir else None
        procs.append((name, node_popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT if out else None), out))
    rclpy.init(args=[])
    monitor = make_monitor(specs, instruction)
    deadline = time.monotonic() + ns.seconds if ns.seconds > 0 else None
    died: dict[str, int] = {}
    try:
        while not _should_stop(ns, monitor, deadline):
            rclpy.spin_once(monitor, timeout_sec=0.1)
            for name, proc, _ in procs:
                if proc.poll() is not None and name not in died:
                    died[name] = proc.returncode
                    monitor.get_logger().error(f"node process {name} exited with code {proc.returncode}")
            if died:
                break
    except KeyboardInterrupt:
        pass
    finally:
        summary = monitor.summary()
        monitor.destroy_node()
        rclpy.try_shutdown()
        codes = _stop_processes(procs)
    summary["exit_codes"] = codes
    summary["died"] = died
    return summary, (1 if died else 0)


def node_popen(cmd: list[str], **kwargs) -> subprocess.Popen:
    """A node process that cannot outlive its starter (`run_node` reads PARENT_PID_ENV). A bringup,
    loop bench or test killed with SIGKILL (a timeout) left its nodes running on the same DDS
    domain; their plans and twists then reached the next graph started on this machine (found
    after a killed loop bench: its policy and Flow2Action nodes kept publishing on /sof/policy/*
    and /sof/cmd/twist)."""
    from sof_ros.ros.dds import PARENT_PID_ENV

    kwargs["env"] = {**(kwargs.get("env") or os.environ), PARENT_PID_ENV: str(os.getpid())}
    return subprocess.Popen(cmd, **kwargs)


STOP_GRACE_S = 10.0


def _stop_processes(procs, grace_s: float = STOP_GRACE_S) -> dict[str, int | None]:
    """SIGINT every node process; one still running after grace_s is asked for its Python stacks
    (SIGUSR1: `run_node` registers faulthandler on it, so they land at the end of its log), then
    killed -- a node that hangs on shutdown leaves a trace of where, not only exit code -9."""
    for _, proc, _ in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    end = time.monotonic() + grace_s
    codes: dict[str, int | None] = {}
    for name, proc, out in procs:
        try:
            proc.wait(timeout=max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"[bringup] {name} did not stop within {grace_s:g} s of SIGINT: killed; its Python stacks "
                  "at that moment are at the end of its log", file=sys.stderr)
            if hasattr(signal, "SIGUSR1"):
                proc.send_signal(signal.SIGUSR1)
                time.sleep(1.0)
            proc.kill()
            proc.wait()
        codes[name] = proc.returncode
        if out:
            out.close()
    return codes


def run_composed(ns, specs, overrides_file: Path, instruction: str) -> tuple[dict, int]:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from sof_ros.ros.base import SofNode

    args = ["sof-bringup", "--ros-args", "--params-file", specs[0].params_file, "--params-file", str(overrides_file)]
    rclpy.init(args=args)
    nodes: list[SofNode] = []
    # one thread: rclpy's MultiThreadedExecutor hands every callback to a Python thread pool, and under
    # the GIL that is queueing. `sof-bringup sim --composed --seconds 40` here: frame -> command p95
    # 163 ms with it, 21 ms with this (p50 15.5 -> 6.5 ms)
    executor = SingleThreadedExecutor()
    code = 0
    try:
        for spec in specs:
            cls = getattr(importlib.import_module(spec.module), NODE_CLASSES[spec.name])
            nodes.append(cls(node_name=spec.name))
        monitor = make_monitor(specs, instruction)
        for n in nodes + [monitor]:
            executor.add_node(n)
        deadline = time.monotonic() + ns.seconds if ns.seconds > 0 else None
        try:
            while not _should_stop(ns, monitor, deadline):
                executor.spin_once(timeout_sec=0.1)
        except KeyboardInterrupt:
            pass
        summary = monitor.summary()
        monitor.destroy_node()
    finally:
        executor.shutdown(timeout_sec=5.0)
        for n in reversed(nodes):
            n.close()
            n.destroy_node()
        rclpy.try_shutdown()
    return summary, code


def main(argv: list[str] | None = None) -> int:
    from sof_ros.ros import dds

    ns = build_parser().parse_args(argv)

    def body() -> int:
        from sof_ros.ros.base import die_with_parent

        die_with_parent()  # started by a benchmark (node_popen): its nodes go with it
        # before rclpy.init here, inherited by the node processes (sof_ros/ros/dds.py): the Fast DDS
        # profile for camera-sized frames, and DDS kept on this machine unless SOF_ROS_NETWORK=lan
        dds.configure()
        specs = make_plan(ns)
        instruction = default_instruction(ns, specs)
        tmp = tempfile.mkdtemp(prefix="sof_bringup_")
        overrides = write_overrides(specs, tmp)
        if ns.dry_run:
            print(json.dumps({"robot": ns.robot, "instruction": instruction,
                              "nodes": [{"name": n, "cmd": c} for n, c in process_commands(specs, overrides)],
                              "dds_environment": dds.current(os.environ)}, indent=1))
            return 0
        check_checkpoint(specs)
        t0 = time.monotonic()
        run = run_composed if ns.composed else run_processes
        summary, code = run(ns, specs, overrides, instruction)
        summary = {"robot": ns.robot, "mode": "composed" if ns.composed else "processes",
                   "instruction": instruction, "seconds": round(time.monotonic() - t0, 2), **summary}
        if ns.until_success and not summary["success"]:
            code = code or 1
        if ns.record:
            summary["record"] = str(Path(ns.record).resolve())
        line = json.dumps(summary)
        print(line, flush=True)
        if ns.summary:
            Path(ns.summary).write_text(line + "\n")
        for f in Path(tmp).iterdir():
            f.unlink()
        os.rmdir(tmp)
        return code

    return run_cli(body)


if __name__ == "__main__":
    raise SystemExit(main())
