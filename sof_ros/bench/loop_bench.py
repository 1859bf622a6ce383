"""`sof-bench loop`: camera frame -> end-effector command latency through the ROS 2 graph.

The camera, skill-policy and Flow2Action nodes run as separate processes (the commands
`sof-bringup` starts, parameters from config/sim.yaml) with the shipped checkpoint; this process
plays the camera driver and the robot. It publishes pre-rendered MetaWorld frames (RGB, depth,
camera_info, camera pose, end-effector pose, all with the capture stamp) on the camera node's input
topics and waits for the TwistStamped that answers each frame (Flow2Action copies the frame's stamp
into the command header). Closed loop: the next frame goes out as soon as the command for the
previous one arrived, so

  p50_ms / p95_ms  latency from the frame's capture stamp to the command's arrival here
                   (camera node -> flow2action -> back, three DDS hops between processes; the policy
                   node re-plans every few frames in parallel, as deployed: wait_for_replan false);
  hz               frames per second that loop sustains.

sim_bridge_hz: control steps per second of the sim-bridge node (MetaWorld as the robot) in lockstep
with the whole graph -- each step waits for the command answering the previous frame -- counted from
its image topic. sim_bridge_open_loop_hz: the sim bridge alone, not waiting for commands (render +
publish throughput).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sof_ros.errors import SofError, run_cli

SIZES = {"128x128": (128, 128), "320x240": (320, 240)}
SIM_RATE_HZ = 100.0  # timer cap of the sim bridge; well above what it reaches on a CPU
NODE_LOG_TAIL = 2500


@dataclass
class Frames:
    """One pre-rendered expert rollout at one size, played in a loop."""

    rgb: list
    depth: list
    ee_pos: list
    gripper: list
    K: np.ndarray
    cam_pose: np.ndarray

    def __len__(self):
        return len(self.rgb)


def render_frames(task: str, size: tuple[int, int], n: int, seed: int = 0) -> Frames:
    """The scripted expert's first n steps of `task`, rendered at size (W, H)."""
    from sof_ros.config import SimConfig
    from sof_ros.sim.metaworld_env import MetaWorldArm, expert_policy

    arm = MetaWorldArm(task, SimConfig(width=size[0], height=size[1]))
    try:
        policy = expert_policy(task)
        obs = arm.reset(seed)
        out = Frames([], [], [], [], obs.intrinsics, obs.cam_pose)
        for _ in range(n):
            out.rgb.append(obs.rgb)
            out.depth.append(obs.depth.astype(np.float32))
            out.ee_pos.append(obs.ee_pos.copy())
            out.gripper.append(float(obs.gripper))
            obs = arm.step(np.clip(policy.get_action(obs.state), -1, 1))
        return out
    finally:
        arm.close()


# --- graph processes --------------------------------------------------------------------------
class Graph:
    """Node processes started exactly as `sof-bringup` starts them; logs to a temp dir."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.procs: list[tuple[str, subprocess.Popen, object]] = []

    def start(self, specs, tag: str) -> None:
        from sof_ros.ros import bringup

        d = self.log_dir / tag
        d.mkdir(parents=True, exist_ok=True)
        overrides = bringup.write_overrides(specs, d)
        for name, cmd in bringup.process_commands(specs, overrides):
            log = open(d / f"{name}.log", "w")
            self.procs.append((name, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                                      env=dict(os.environ, PYTHONUNBUFFERED="1")), log))

    def check_alive(self) -> None:
        for name, proc, log in self.procs:
            if proc.poll() is not None:
                log.flush()
                tail = Path(log.name).read_text()[-NODE_LOG_TAIL:]
                raise SofError(f"node process {name} exited with code {proc.returncode}; its log ({log.name}) ends:\n{tail}")

    def stop(self, names: set[str] | None = None) -> None:
        keep = []
        for entry in self.procs:
            if names is None or entry[0] in names:
                if entry[1].poll() is None:
                    entry[1].send_signal(signal.SIGINT)
            else:
                keep.append(entry)
        for name, proc, log in self.procs:
            if entry_in(name, proc, keep):
                continue
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
        self.procs = keep


def entry_in(name, proc, entries) -> bool:
    return any(n == name and p is proc for n, p, _ in entries)


# --- the bench node -----------------------------------------------------------------------------
class Bench:
    """Camera driver + robot stand-in + command monitor in one rclpy node, spun in a thread."""

    def __init__(self, specs):
        import rclpy
        from geometry_msgs.msg import PoseStamped, TwistStamped
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from sensor_msgs.msg import CameraInfo, Image
        from std_msgs.msg import Float64, String

        from sof_ros.ros.base import command_qos, latched_qos, sensor_qos

        eff = {s.name: s.effective() for s in specs}
        cam, pol, f2a = eff["sof_camera"], eff["sof_policy"], eff["sof_flow2action"]
        self.base_frame = f2a["robot.base_frame"]
        self.cam_frame = cam["frame_id"]
        rclpy.init(args=[])
        self.node = Node("sof_loop_bench")
        n = self.node
        sq = sensor_qos(5)
        self.pub_img = n.create_publisher(Image, cam["image_in_topic"], sq)
        self.pub_depth = n.create_publisher(Image, cam["depth_in_topic"], sq)
        self.pub_info = n.create_publisher(CameraInfo, cam["camera_info_in_topic"], sq)
        self.pub_cam_pose = n.create_publisher(PoseStamped, cam["camera_pose_in_topic"], latched_qos())
        self.pub_ee = n.create_publisher(PoseStamped, f2a["ee_pose_topic"], sq)
        self.pub_grip = n.create_publisher(Float64, f2a["gripper_state_topic"], sq)
        self.pub_instruction = n.create_publisher(String, pol["instruction_topic"], latched_qos())
        self._lock = threading.Lock()
        self._pending: int | None = None
        self._answered = threading.Event()
        self.latency_ns: int | None = None
        self.nonzero = 0
        self.answered = 0
        self.sim_frames: list[float] = []
        n.create_subscription(TwistStamped, f2a["twist_topic"], self._on_twist, command_qos(50))
        n.create_subscription(Image, cam["image_in_topic"], self._on_sim_frame, sensor_qos(10))
        self._ex = SingleThreadedExecutor()
        self._ex.add_node(n)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        while not self._stop.is_set():
            self._ex.spin_once(timeout_sec=0.05)

    def now_ns(self) -> int:
        return self.node.get_clock().now().nanoseconds

    def _on_twist(self, msg) -> None:
        from sof_ros.ros import conversions as cv

        t = self.now_ns()
        stamp = cv.stamp_to_ns(msg.header.stamp)
        with self._lock:
            if stamp != self._pending:
                return  # a watchdog zero or an answer to a frame we gave up on
            self._pending = None
            self.latency_ns = t - stamp
            self.answered += 1
            lin = msg.twist.linear
            self.nonzero += int(bool(lin.x or lin.y or lin.z))
        self._answered.set()

    def _on_sim_frame(self, msg) -> None:
        self.sim_frames.append(time.monotonic())

    def publish_instruction(self, text: str) -> None:
        from std_msgs.msg import String

        self.pub_instruction.publish(String(data=text))

    def publish_camera_pose(self, T: np.ndarray) -> None:
        from sof_ros.ros import conversions as cv

        self.pub_cam_pose.publish(cv.matrix_to_pose_stamped(T, self.now_ns(), self.base_frame))

    def send(self, frames: Frames, i: int) -> int:
        """Publish frame i (mod len) with everything the graph needs at its stamp; returns the stamp."""
        from std_msgs.msg import Float64

        from sof_ros.ros import conversions as cv

        k = i % len(frames)
        rgb, depth = frames.rgb[k], frames.depth[k]
        h, w = rgb.shape[:2]
        T = np.eye(4)
        T[:3, 3] = frames.ee_pos[k]
        # conversions first: the stamp is the capture time, taken as the frame goes out
        ee_msg = cv.matrix_to_pose_stamped(T, 0, self.base_frame)
        info = cv.camera_info_msg(frames.K, w, h, 0, self.cam_frame)
        dmsg = cv.image_to_msg(depth, "32FC1", 0, self.cam_frame)
        imsg = cv.image_to_msg(rgb, "rgb8", 0, self.cam_frame)
        stamp = self.now_ns()
        st = cv.ns_to_stamp(stamp)
        for m in (ee_msg, info, dmsg, imsg):
            m.header.stamp = st
        with self._lock:
            self._pending = stamp
            self._answered.clear()
        self.pub_ee.publish(ee_msg)
        self.pub_grip.publish(Float64(data=frames.gripper[k]))
        self.pub_info.publish(info)
        self.pub_depth.publish(dmsg)
        self.pub_img.publish(imsg)
        return stamp

    def wait(self, timeout: float) -> float | None:
        """Latency in ms of the command answering the last frame, None on timeout."""
        if not self._answered.wait(timeout):
            with self._lock:
                self._pending = None
            return None
        return self.latency_ns / 1e6

    def close(self) -> None:
        import rclpy

        self._stop.set()
        self._thread.join(timeout=5)
        self._ex.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown()


# --- phases -------------------------------------------------------------------------------------
def warm_up(bench: Bench, graph: Graph, frames: Frames, timeout: float) -> int:
    """Frames at 10 Hz until a command answers one (nodes started, checkpoint loaded, first plan)."""
    end = time.monotonic() + timeout
    i = 0
    while time.monotonic() < end:
        graph.check_alive()
        bench.send(frames, i)
        i += 1
        if bench.wait(0.1) is not None:
            return i
    raise SofError(f"no command answered a frame within {timeout:.0f} s of starting the graph; "
                   f"node logs: {graph.log_dir}")


def closed_loop(bench: Bench, graph: Graph, frames: Frames, n: int, warmup: int, timeout: float) -> dict:
    lat, lost = [], 0
    nz0 = bench.nonzero
    t_start = None
    for i in range(warmup + n):
        if i == warmup:
            t_start = time.monotonic()
            nz0 = bench.nonzero
        bench.send(frames, i)
        ms = bench.wait(timeout)
        if i % 20 == 0:
            graph.check_alive()
        if i < warmup:
            continue
        if ms is None:
            lost += 1
        else:
            lat.append(ms)
    elapsed = time.monotonic() - t_start
    if len(lat) < max(5, n // 2):
        raise SofError(f"only {len(lat)} of {n} frames were answered by a command within {timeout:g} s; "
                       f"node logs: {graph.log_dir}")
    a = np.asarray(lat)
    return {"p50_ms": round(float(np.percentile(a, 50)), 2), "p95_ms": round(float(np.percentile(a, 95)), 2),
            "hz": round(n / elapsed, 2), "mean_ms": round(float(a.mean()), 2), "max_ms": round(float(a.max()), 2),
            "frames": n, "answered": len(lat), "lost": lost, "nonzero_commands": bench.nonzero - nz0}


def count_sim_rate(bench: Bench, graph: Graph, seconds: float, settle: float, min_frames: int = 1) -> float:
    """Frames per second on the sim bridge's image topic over `seconds`, after `settle` seconds."""
    end = time.monotonic() + settle + 120.0
    while len(bench.sim_frames) < min_frames and time.monotonic() < end:  # started, checkpoint loaded
        graph.check_alive()
        time.sleep(0.1)
    if len(bench.sim_frames) < min_frames:
        raise SofError(f"the sim bridge published no frames; node logs: {graph.log_dir}")
    time.sleep(settle)
    t0 = time.monotonic()
    n0 = len(bench.sim_frames)
    while time.monotonic() - t0 < seconds:
        graph.check_alive()
        time.sleep(0.1)
    t1 = time.monotonic()
    return round((len(bench.sim_frames) - n0) / (t1 - t0), 2)


# --- results ------------------------------------------------------------------------------------
def _display_path(path) -> str:
    """Relative to the working directory when inside it (results files should not name one machine)."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def write_results(out_dir: Path, result: dict) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    jpath, mpath = out_dir / "loop.json", out_dir / "loop.md"
    jpath.write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Control-loop latency benchmark (`sof-bench loop`)", "",
        f"- command: `{result['command']}`",
        f"- commit: `{result['commit']}`",
        f"- machine: {result['machine']}",
        f"- graph: camera, skill-policy and Flow2Action nodes as separate processes (config/sim.yaml, "
        f"checkpoint `{result['checkpoint']}`, policy `{result['policy']}`), Fast DDS on loopback",
        "- latency: camera frame capture stamp -> arrival of the TwistStamped answering it, closed loop "
        "(next frame as soon as the command arrived); hz = frames/s that loop sustains",
        f"- frames: scripted-expert rollout of `{result['task']}` rendered by MetaWorld; "
        f"{result['settings']['frames']} measured frames per size after {result['settings']['warmup']} warm-up frames",
        "",
        "| resolution | p50 ms | p95 ms | mean ms | max ms | hz | frames answered |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in result["resolutions"].items():
        lines.append(f"| {name} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['mean_ms']:.2f} | {r['max_ms']:.2f} | "
                     f"{r['hz']:.2f} | {r['answered']}/{r['frames']} |")
    if result.get("sim_bridge_hz") is None:
        lines += ["", "Sim-bridge rates not measured (--no-sim)."]
    else:
        lines += ["", "| sim bridge (128x128) | steps/s |", "|---|---:|",
                  f"| lockstep with the graph (`sim_bridge_hz`) | {result['sim_bridge_hz']:.2f} |"]
    if result.get("sim_bridge_open_loop_hz") is not None:
        lines.append(f"| alone, not waiting for commands (`sim_bridge_open_loop_hz`) | {result['sim_bridge_open_loop_hz']:.2f} |")
    mpath.write_text("\n".join(lines) + "\n")
    return jpath, mpath


def main(argv=None):
    def body():
        from sof_ros.bench.meta import command_line, git_commit, machine
        from sof_ros.ros import graph as G

        p = argparse.ArgumentParser(prog="sof-bench loop", description=__doc__.splitlines()[0])
        p.add_argument("--checkpoint", default="models/sof_metaworld", help="SOF checkpoint the nodes load")
        p.add_argument("--policy", default="sof", help="agent.policy of the nodes: a row of sof_ros.policies.ROWS or module:Class")
        p.add_argument("--task", default="button-press-topdown", help="MetaWorld task the frames come from")
        p.add_argument("--frames", type=int, default=200, help="measured frames per resolution")
        p.add_argument("--warmup", type=int, default=20, help="unmeasured frames after each size change")
        p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
        p.add_argument("--sim-seconds", type=float, default=10.0, help="measurement window of each sim-bridge rate")
        p.add_argument("--no-sim", action="store_true", help="skip the sim-bridge rates")
        p.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for the command answering a frame")
        p.add_argument("--out", "--out-dir", dest="out", default="benchmarks/results", help="where loop.json / loop.md go")
        a = p.parse_args(argv)
        if a.frames < 5 or a.warmup < 0 or a.sim_seconds <= 0 or a.timeout <= 0:
            raise SofError("--frames must be >= 5, --warmup >= 0, --sim-seconds and --timeout > 0")
        command = command_line()
        if not command.startswith("sof-bench"):
            command = "sof-bench loop " + " ".join(argv if argv is not None else sys.argv[1:])
        command, commit, host = command.strip(), git_commit(), machine()
        checkpoint = G.resolve_checkpoint(a.checkpoint)
        if ":" not in a.policy and not (Path(checkpoint) / "config.yaml").is_file():
            raise SofError(f"no SOF checkpoint at {a.checkpoint} (config.yaml missing); pass --checkpoint DIR or "
                           "train one: sof-train --config config/metaworld.yaml")
        os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # this process and the nodes
        from sof_ros.ros import dds

        dds_env = dds.configure()  # the same Fast DDS profile as sof-bringup and every node
        rate = SIM_RATE_HZ
        params = {
            "sof_policy.agent.policy": a.policy, "sof_flow2action.agent.policy": a.policy,
            "sof_flow2action.wait_for_replan": False,  # deployed behaviour: keep acting while re-planning
            "sof_flow2action.robot.control_rate_hz": rate, "sof_sim_bridge.rate_hz": rate,
            "sof_flow2action.robot.max_linear_speed": 0.02 * rate,  # the bench measures time, not motion limits
            "sof_sim_bridge.max_steps": 0, "sof_sim_bridge.lockstep_timeout_s": 1.0,
        }
        specs = G.plan("sim", checkpoint=checkpoint, task=a.task, params=params)
        by_name = {s.name: s for s in specs}
        nodes = [by_name[n] for n in ("sof_camera", "sof_policy", "sof_flow2action")]
        from sof_ros.sim.metaworld_env import instruction_for

        t_all = time.perf_counter()
        print(f"[loop] rendering {a.task} frames at {', '.join(a.sizes)}", flush=True)
        n_render = 60
        frames = {s: render_frames(a.task, SIZES[s], n_render) for s in a.sizes}
        log_dir = Path(tempfile.mkdtemp(prefix="sof_loop_bench_"))
        graph = Graph(log_dir)
        bench = None
        result = {"command": command, "commit": commit, "machine": host, "resolutions": {}, "sim_bridge_hz": None,
                  "sim_bridge_open_loop_hz": None, "task": a.task, "checkpoint": _display_path(checkpoint),
                  "policy": a.policy,
                  "settings": {"frames": a.frames, "warmup": a.warmup, "timeout_s": a.timeout,
                               "sim_seconds": a.sim_seconds, "sim_rate_cap_hz": rate,
                               "ros_domain_id": os.environ.get("ROS_DOMAIN_ID", "0"),
                               "discovery_range": os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"],
                               "rmw": os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp (default)"),
                               "fastdds_profile": os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE", ""),
                               "fastdds_profile_from": "sof_ros.ros.dds" if dds_env else "environment"}}
        try:
            bench = Bench(specs)
            if not a.no_sim:  # the sim bridge alone first, before the graph loads the CPU
                open_spec = G.plan("sim", checkpoint=checkpoint, task=a.task,
                                   params={**params, "sof_sim_bridge.lockstep": False})[0]
                print(f"[loop] sim bridge alone, {a.sim_seconds:g} s", flush=True)
                graph.start([open_spec], "sim_open_loop")
                result["sim_bridge_open_loop_hz"] = count_sim_rate(bench, graph, a.sim_seconds, settle=1.0)
                graph.stop()
                time.sleep(1.0)
                bench.sim_frames.clear()
            print(f"[loop] starting camera, policy and flow2action processes (logs: {log_dir})", flush=True)
            graph.start(nodes, "graph")
            bench.publish_instruction(instruction_for(a.task))
            first = frames[a.sizes[0]]
            bench.publish_camera_pose(first.cam_pose)
            warm_up(bench, graph, first, timeout=180.0)
            for s in a.sizes:
                print(f"[loop] {s}: {a.warmup} + {a.frames} frames, closed loop", flush=True)
                r = closed_loop(bench, graph, frames[s], a.frames, a.warmup, a.timeout)
                result["resolutions"][s] = r
                print(f"[loop]   p50 {r['p50_ms']:.2f} ms  p95 {r['p95_ms']:.2f} ms  {r['hz']:.1f} Hz", flush=True)
            if not a.no_sim:
                print(f"[loop] sim bridge in lockstep with the graph, {a.sim_seconds:g} s", flush=True)
                bench.sim_frames.clear()
                graph.start([by_name["sof_sim_bridge"]], "sim_lockstep")
                result["sim_bridge_hz"] = count_sim_rate(bench, graph, a.sim_seconds, settle=2.0, min_frames=2)
        finally:
            if bench is not None:
                bench.close()
            graph.stop()
        result["seconds"] = round(time.perf_counter() - t_all, 1)
        if a.no_sim:
            result.pop("sim_bridge_open_loop_hz")
        jpath, mpath = write_results(Path(a.out), result)
        print(mpath.read_text())
        print(f"wrote {jpath} and {mpath} in {result['seconds']:.0f} s")

    return run_cli(body)


if __name__ == "__main__":
    main()
