"""`sof-bench loop`: what a user feels -- camera frame -> plan -> end-effector command latency
through the ROS 2 graph, inference included.

The camera, skill-policy and Flow2Action nodes run as separate processes (the commands
`sof-bringup` starts, parameters from config/sim.yaml) with the shipped checkpoint and row; this
process plays the camera driver and the robot. It publishes pre-rendered MetaWorld frames (RGB,
16UC1 depth in millimetres as realsense2_camera publishes it, camera_info, camera pose,
end-effector pose, all with the capture stamp) on the camera node's input topics at a fixed camera
rate (--fps, default 30: RealSense's), whether or not the graph keeps up, and watches the plan
topics and Flow2Action's command info (which names the frame and the plan behind every command).
Per resolution:

  frame_to_plan_ms     frame capture -> the plan made from that frame has arrived here (camera node
                       resize, policy: skill tokens + flow decoder + action head, 3 DDS hops);
  frame_to_command_ms  frame capture -> the first command computed from the plan made from that
                       frame has arrived here (the above + Flow2Action, 4 hops);
  plan_age_ms          for every command answering a frame: its arrival - the capture time of the
                       frame its plan was made from (how old the information behind each command is);
  hz                   frames per second that got a command.

The policy re-plans every replan_every frames while Flow2Action keeps acting on the previous plan
(wait_for_replan false, as deployed); a new plan is acted on at once.

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

SIZES = {"128x128": (128, 128), "320x240": (320, 240), "640x480": (640, 480)}
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
            # millimetres, 0 = no depth: what realsense2_camera publishes (16UC1)
            out.depth.append(np.nan_to_num(np.clip(obs.depth * 1000.0, 0, 65535), nan=0.0).round().astype(np.uint16))
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
            self.procs.append((name, bringup.node_popen(cmd, stdout=log, stderr=subprocess.STDOUT,
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
    """Camera driver + robot stand-in + plan and command monitor in one rclpy node, spun in a thread.
    Every arrival is timed on this process's clock, the clock the frames were stamped with."""

    def __init__(self, specs):
        import rclpy
        from geometry_msgs.msg import PoseStamped, TwistStamped
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import CameraInfo, Image
        from std_msgs.msg import Float64, Float64MultiArray, Int64MultiArray, String

        from sof_ros.ros.base import QosWatchedNode, command_qos, latched_qos, sensor_qos

        eff = {s.name: s.effective() for s in specs}
        cam, pol, f2a = eff["sof_camera"], eff["sof_policy"], eff["sof_flow2action"]
        self.base_frame = f2a["robot.base_frame"]
        self.cam_frame = cam["frame_id"]
        rclpy.init(args=[])
        self.node = QosWatchedNode("sof_loop_bench")  # as the graph's nodes: no per-endpoint event handlers
        n = self.node
        sq, cq = sensor_qos(5), command_qos(100)
        self.pub_img = n.create_publisher(Image, cam["image_in_topic"], sq)
        self.pub_depth = n.create_publisher(Image, cam["depth_in_topic"], sq)
        self.pub_info = n.create_publisher(CameraInfo, cam["camera_info_in_topic"], sq)
        self.pub_cam_pose = n.create_publisher(PoseStamped, cam["camera_pose_in_topic"], latched_qos())
        self.pub_ee = n.create_publisher(PoseStamped, f2a["ee_pose_topic"], sq)
        self.pub_grip = n.create_publisher(Float64, f2a["gripper_state_topic"], sq)
        self.pub_instruction = n.create_publisher(String, pol["instruction_topic"], latched_qos())
        self._lock = threading.Lock()
        self.sent: dict[int, None] = {}  # frame stamps, in order
        self.plan_parts: dict[int, list[int]] = {}  # plan (frame) stamp -> arrival of each of its 3 parts
        self.twist_at: dict[int, int] = {}  # twist header stamp -> arrival
        self.commands: list[tuple[int, object]] = []  # (arrival, CommandInfo)
        self.sim_frames: list[float] = []
        n.create_subscription(TwistStamped, f2a["twist_topic"], self._on_twist, cq)
        n.create_subscription(Int64MultiArray, f2a["command_info_topic"], self._on_command_info, cq)
        n.create_subscription(Int64MultiArray, pol["tokens_topic"], self._on_tokens, cq)
        n.create_subscription(Image, pol["flow_plan_topic"], self._on_flow_plan, cq)
        n.create_subscription(Float64MultiArray, pol["action_chunk_topic"], self._on_actions, cq)
        self._sim_topic, self._sim_sub = cam["image_in_topic"], None
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

    # --- monitors -----------------------------------------------------------------------------
    def _plan_part(self, stamp: int) -> None:
        t = self.now_ns()
        with self._lock:
            if stamp in self.sent:
                self.plan_parts.setdefault(stamp, []).append(t)

    def _on_tokens(self, msg) -> None:
        from sof_ros.ros import conversions as cv

        self._plan_part(cv.msg_to_tokens(msg)[1])

    def _on_flow_plan(self, msg) -> None:
        from sof_ros.ros import conversions as cv

        self._plan_part(cv.stamp_to_ns(msg.header.stamp))

    def _on_actions(self, msg) -> None:
        from sof_ros.ros import conversions as cv

        self._plan_part(cv.msg_to_actions(msg)[1])

    def _on_twist(self, msg) -> None:
        from sof_ros.ros import conversions as cv

        t = self.now_ns()
        with self._lock:
            self.twist_at[cv.stamp_to_ns(msg.header.stamp)] = t

    def _on_command_info(self, msg) -> None:
        from sof_ros.ros import conversions as cv

        t = self.now_ns()
        info = cv.msg_to_command_info(msg)
        with self._lock:
            self.commands.append((t, info))

    def _on_sim_frame(self, msg) -> None:
        self.sim_frames.append(time.monotonic())

    def count_sim_frames(self, on: bool) -> None:
        """Subscribe to the sim bridge's frames only while its rate is measured: during the latency
        phases this process publishes on that topic itself, and taking every one of its own frames
        back (921 kB each at 640x480) loaded the machine the latency was measured on."""
        from sensor_msgs.msg import Image

        from sof_ros.ros.base import sensor_qos

        if on and self._sim_sub is None:
            self.sim_frames.clear()
            self._sim_sub = self.node.create_subscription(Image, self._sim_topic, self._on_sim_frame, sensor_qos(10))
        elif not on and self._sim_sub is not None:
            self.node.destroy_subscription(self._sim_sub)
            self._sim_sub = None

    # --- camera driver ------------------------------------------------------------------------
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
        dmsg = cv.image_to_msg(depth, "16UC1", 0, self.cam_frame)
        imsg = cv.image_to_msg(rgb, "rgb8", 0, self.cam_frame)
        stamp = self.now_ns()
        st = cv.ns_to_stamp(stamp)
        for m in (ee_msg, info, dmsg, imsg):
            m.header.stamp = st
        with self._lock:
            self.sent[stamp] = None
        self.pub_ee.publish(ee_msg)
        self.pub_grip.publish(Float64(data=frames.gripper[k]))
        self.pub_info.publish(info)
        self.pub_depth.publish(dmsg)
        self.pub_img.publish(imsg)
        return stamp

    def planned_commands(self) -> int:
        """Commands so far that answer a frame of ours with a plan made from a frame of ours."""
        with self._lock:
            return sum(1 for _, c in self.commands if c.frame_stamp_ns in self.sent and c.plan_stamp_ns in self.sent)

    def close(self) -> None:
        import rclpy

        self._stop.set()
        self._thread.join(timeout=5)
        self._ex.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown()


# --- phases -------------------------------------------------------------------------------------
def play(bench: Bench, graph: Graph, frames: Frames, n: int, fps: float, start: int = 0,
         until=None) -> list[int]:
    """Publish n frames at fps (a camera: on its own clock, whatever the graph does); returns their
    stamps. Stops early when until() is true."""
    stamps: list[int] = []
    period = 1.0 / fps
    t_next = time.monotonic()
    for i in range(start, start + n):
        delay = t_next - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        stamps.append(bench.send(frames, i))
        t_next += period
        if i % 30 == 0:
            graph.check_alive()
        if until is not None and until():
            break
    return stamps


def warm_up(bench: Bench, graph: Graph, frames: Frames, fps: float, timeout: float) -> None:
    """Frames until a command computed from a plan of ours arrives (nodes started, checkpoint loaded)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if play(bench, graph, frames, int(fps), fps, until=lambda: bench.planned_commands() > 0):
            if bench.planned_commands() > 0:
                return
    raise SofError(f"no command computed from a plan answered a frame within {timeout:.0f} s of starting the graph; "
                   f"node logs: {graph.log_dir}")


BOOTSTRAP_RESAMPLES = 2000


def _pct(values: list[float]) -> dict:
    """p50/p95 with a bootstrap 95% interval of the p95: a tail percentile of ~100-300 plans moves
    by a millisecond or more between runs, and a target on it is only met when its interval says so."""
    a = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(0)
    boot = np.percentile(a[rng.integers(0, a.size, (BOOTSTRAP_RESAMPLES, a.size))], 95, axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"p50": round(float(np.percentile(a, 50)), 2), "p95": round(float(np.percentile(a, 95)), 2),
            "p95_ci95": [round(float(lo), 2), round(float(hi), 2)],
            "mean": round(float(a.mean()), 2), "max": round(float(a.max()), 2), "n": int(a.size)}


def measure(bench: Bench, stamps: list[int], elapsed_s: float) -> dict:
    """The three latencies and the command rate over the frames `stamps` (see the module doc)."""
    window = set(stamps)
    with bench._lock:
        parts = {s: list(v) for s, v in bench.plan_parts.items() if s in window}
        commands = [(bench.twist_at.get(c.command_stamp_ns, t), c) for t, c in bench.commands if c.frame_stamp_ns in window]
    frame_to_plan = [(max(v) - s) / 1e6 for s, v in parts.items() if len(v) >= 3]
    first_command: dict[int, int] = {}
    for t, c in commands:
        if c.plan_stamp_ns in window:
            first_command[c.plan_stamp_ns] = min(t, first_command.get(c.plan_stamp_ns, t))
    frame_to_command = [(t - s) / 1e6 for s, t in first_command.items()]
    plan_age = [(t - c.plan_stamp_ns) / 1e6 for t, c in commands if c.plan_stamp_ns > 0]
    answered = {c.frame_stamp_ns for _, c in commands}
    if len(frame_to_plan) < 3 or len(frame_to_command) < 3:
        raise SofError(f"only {len(frame_to_plan)} plans and {len(frame_to_command)} commands from them over "
                       f"{len(stamps)} frames: the graph is not planning / acting (see the node logs)")
    return {
        "frame_to_plan_ms": _pct(frame_to_plan),
        "frame_to_command_ms": _pct(frame_to_command),
        "plan_age_ms": _pct(plan_age),
        "hz": round(len(answered) / elapsed_s, 2),
        "plans_hz": round(len(frame_to_plan) / elapsed_s, 2),
        "frames": len(stamps), "answered": len(answered), "plans": len(frame_to_plan),
        "commands": len(commands), "zero_commands": sum(1 for _, c in commands if c.is_zero),
    }


def run_size(bench: Bench, graph: Graph, frames: Frames, n: int, warmup: int, fps: float, settle_s: float = 1.0) -> dict:
    play(bench, graph, frames, warmup, fps)
    t0 = time.monotonic()
    stamps = play(bench, graph, frames, n, fps, start=warmup)
    elapsed = time.monotonic() - t0
    time.sleep(settle_s)  # plans and commands still in flight for the last frames
    graph.check_alive()
    return measure(bench, stamps, elapsed)


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


METRICS = (("frame_to_plan_ms", "frame -> plan"), ("frame_to_command_ms", "frame -> command from its plan"),
           ("plan_age_ms", "plan age behind each command"))


def _checkpoint_replan_every(checkpoint: str) -> int | None:
    import yaml

    path = Path(checkpoint) / "config.yaml"
    if not path.is_file():
        return None
    return (yaml.safe_load(path.read_text()).get("eval") or {}).get("replan_every")


def write_results(out_dir: Path, result: dict) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    jpath, mpath = out_dir / "loop.json", out_dir / "loop.md"
    jpath.write_text(json.dumps(result, indent=2) + "\n")
    st = result["settings"]
    lines = [
        "# Control-loop latency benchmark (`sof-bench loop`), inference included", "",
        f"- command: `{result['command']}`",
        f"- commit: `{result['commit']}`",
        f"- machine: {result['machine']}; 1-min load average {st['load_before']} before, {st['load_after']} after",
        f"- graph: camera, skill-policy and Flow2Action nodes as separate processes (config/sim.yaml, "
        f"checkpoint `{result['checkpoint']}`, row `{result['policy']}`), Fast DDS on loopback; the camera node "
        f"publishes frames at the working resolution {st['working_size']}",
        f"- frames: scripted-expert rollout of `{result['task']}` rendered by MetaWorld at each resolution, played at "
        f"{st['fps']:g} frames/s (RGB + 16UC1 depth + camera_info + poses); {st['frames']} measured frames per "
        f"resolution after {st['warmup']} unmeasured ones; the policy re-plans every {st['replan_every']} frames",
        "- frame -> plan: capture stamp -> the plan made from that frame (tokens, flow plan, action chunk) arrived here",
        "- frame -> command: capture stamp -> the first command computed from the plan made from that frame arrived here",
        "- plan age: for every command answering a frame, arrival - capture stamp of the frame its plan came from",
        "- hz: frames per second that got a command",
        "- p95 [lo, hi]: bootstrap 95% interval of the p95 over the measured frames",
        "",
        "| resolution | " + " | ".join(f"{label} p50 / p95 [lo, hi] ms" for _, label in METRICS) + " | hz | plans | frames answered |",
        "|---|" + "---:|" * (len(METRICS) + 3),
    ]
    for name, r in result["resolutions"].items():
        cells = [f"{r[k]['p50']:.1f} / {r[k]['p95']:.1f} [{r[k]['p95_ci95'][0]:.1f}, {r[k]['p95_ci95'][1]:.1f}]"
                 for k, _ in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {r['hz']:.1f} | {r['plans']} | {r['answered']}/{r['frames']} |")
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
        from sof_ros.ros import bringup
        from sof_ros.ros import graph as G

        p = argparse.ArgumentParser(prog="sof-bench loop", description=__doc__.splitlines()[0])
        p.add_argument("--checkpoint", default="models/sof_metaworld", help="SOF checkpoint the nodes load")
        p.add_argument("--policy", default="sof", help="agent.policy of the nodes: a row of sof_ros.policies.ROWS or module:Class")
        p.add_argument("--task", default="button-press-topdown", help="MetaWorld task the frames come from")
        p.add_argument("--frames", type=int, default=1350,
                       help="measured frames per resolution (1350: 45 s, ~340 plans at a plan every 4 frames)")
        p.add_argument("--warmup", type=int, default=30, help="unmeasured frames after each size change")
        p.add_argument("--fps", type=float, default=30.0, help="camera frame rate (RealSense: 30)")
        p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
        p.add_argument("--sim-seconds", type=float, default=10.0, help="measurement window of each sim-bridge rate")
        p.add_argument("--no-sim", action="store_true", help="skip the sim-bridge rates")
        p.add_argument("--param", action="append", default=[], metavar="NODE.PARAM=VALUE",
                       help="node parameter override, as sof-bringup --param (e.g. sof_camera.working_width=0)")
        p.add_argument("--out", "--out-dir", dest="out", default="benchmarks/results", help="where loop.json / loop.md go")
        a = p.parse_args(argv)
        if a.frames < 5 or a.warmup < 0 or a.sim_seconds <= 0 or a.fps <= 0:
            raise SofError("--frames must be >= 5, --warmup >= 0, --sim-seconds and --fps > 0")
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
            "sof_camera.rate_hz": 0.0,  # every frame of the camera is a control step
            "sof_flow2action.robot.control_rate_hz": rate, "sof_sim_bridge.rate_hz": rate,
            "sof_flow2action.robot.max_linear_speed": 0.02 * rate,  # the bench measures time, not motion limits
            "sof_sim_bridge.max_steps": 0, "sof_sim_bridge.lockstep_timeout_s": 1.0,
            # the bench plays colour and depth only: no segmentation for Flow2Action to wait for
            "sof_flow2action.object_mask_topic": "", "sof_flow2action.robot_mask_topic": "",
            **bringup.parse_params(a.param),
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
        eff = {n.name: n.effective() for n in nodes}
        cam = eff["sof_camera"]
        replan = eff["sof_policy"]["agent.replan_every"] or _checkpoint_replan_every(checkpoint)
        result = {"command": command, "commit": commit, "machine": host, "resolutions": {}, "sim_bridge_hz": None,
                  "sim_bridge_open_loop_hz": None, "task": a.task, "checkpoint": _display_path(checkpoint),
                  "policy": a.policy,
                  "settings": {"frames": a.frames, "warmup": a.warmup, "fps": a.fps, "replan_every": replan,
                               "working_size": (f"{cam['working_width']}x{cam['working_height']}"
                                                if cam["working_width"] else "as captured"),
                               "params": {k: v for k, v in params.items()},
                               "sim_seconds": a.sim_seconds, "sim_rate_cap_hz": rate,
                               "load_before": round(os.getloadavg()[0], 2),
                               "ros_domain_id": os.environ.get("ROS_DOMAIN_ID", "0"),
                               "discovery_range": os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"],
                               "rmw": os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp (default)"),
                               "fastdds_profile_from": "sof_ros.ros.dds" if dds_env else "environment"}}
        try:
            bench = Bench(specs)
            if not a.no_sim:  # the sim bridge alone first, before the graph loads the CPU
                open_spec = G.plan("sim", checkpoint=checkpoint, task=a.task,
                                   params={**params, "sof_sim_bridge.lockstep": False})[0]
                print(f"[loop] sim bridge alone, {a.sim_seconds:g} s", flush=True)
                bench.count_sim_frames(True)
                graph.start([open_spec], "sim_open_loop")
                result["sim_bridge_open_loop_hz"] = count_sim_rate(bench, graph, a.sim_seconds, settle=1.0)
                graph.stop()
                bench.count_sim_frames(False)
                time.sleep(1.0)
            print(f"[loop] starting camera, policy and flow2action processes (logs: {log_dir})", flush=True)
            graph.start(nodes, "graph")
            bench.publish_instruction(instruction_for(a.task))
            first = frames[a.sizes[0]]
            bench.publish_camera_pose(first.cam_pose)
            warm_up(bench, graph, first, a.fps, timeout=180.0)
            for s in a.sizes:
                print(f"[loop] {s}: {a.warmup} + {a.frames} frames at {a.fps:g} frames/s", flush=True)
                r = run_size(bench, graph, frames[s], a.frames, a.warmup, a.fps)
                result["resolutions"][s] = r
                print("[loop]   " + "  ".join(f"{k} p50 {r[k]['p50']:.1f} p95 {r[k]['p95']:.1f}" for k, _ in METRICS)
                      + f"  {r['hz']:.1f} Hz", flush=True)
            if not a.no_sim:
                print(f"[loop] sim bridge in lockstep with the graph, {a.sim_seconds:g} s", flush=True)
                bench.count_sim_frames(True)
                graph.start([by_name["sof_sim_bridge"]], "sim_lockstep")
                result["sim_bridge_hz"] = count_sim_rate(bench, graph, a.sim_seconds, settle=2.0, min_frames=2)
        finally:
            if bench is not None:
                bench.close()
            graph.stop()
        result["settings"]["load_after"] = round(os.getloadavg()[0], 2)
        result["seconds"] = round(time.perf_counter() - t_all, 1)
        if a.no_sim:
            result.pop("sim_bridge_open_loop_hz")
        jpath, mpath = write_results(Path(a.out), result)
        print(mpath.read_text())
        print(f"wrote {jpath} and {mpath} in {result['seconds']:.0f} s")

    return run_cli(body)


if __name__ == "__main__":
    main()
