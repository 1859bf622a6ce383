"""The SOF graph as separate processes on loopback DDS, started by sof-bringup exactly as deployed:
instruction in -> skill tokens, flow plans, commands out; the sim bridge reports task success."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("rclpy")

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "models" / "sof_metaworld"
FAKE = ["--param", "sof_policy.agent.policy=ros_test_doubles:FakeAgent",
        "--param", "sof_flow2action.agent.policy=ros_test_doubles:FakeAgent"]
FAST_START = ["--param", "sof_sim_bridge.lockstep_timeout_s=1.0"]


@pytest.fixture(autouse=True)
def _own_ros_home(monkeypatch, tmp_path):
    """Node processes inherit a test-own $ROS_HOME: flow2action keeps its e-stop latch in
    $ROS_HOME/sof_ros, and this machine's latched e-stop must not stop a test's arm."""
    monkeypatch.setenv("ROS_HOME", str(tmp_path / "ros_home"))


def run_bringup(args: list[str], tmp_path: Path, timeout: float) -> tuple[subprocess.CompletedProcess, dict]:
    summary = tmp_path / "summary.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "test"), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "sof_ros.ros.bringup", *args, "--summary", str(summary), "--log-dir", str(tmp_path / "logs")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    logs = "\n".join(f"--- {f.name}\n{f.read_text()[-3000:]}" for f in sorted((tmp_path / "logs").glob("*.log"))) \
        if (tmp_path / "logs").is_dir() else ""
    assert summary.is_file(), f"no summary; rc={proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n{logs}"
    data = json.loads(summary.read_text())
    data["_logs"] = logs + proc.stderr[-3000:]
    return proc, data


@pytest.mark.timeout(120)
def test_separate_processes_instruction_to_commands_with_recording(ros_env, tmp_path):
    mcap = tmp_path / "run.mcap"
    # stops after 25 commands, not after a fixed time: how many frames fit in N seconds depends on the CPU
    proc, s = run_bringup(["sim", "--seconds", "75", "--until-commands", "25", "--record", str(mcap), *FAKE,
                           *FAST_START], tmp_path, 100)
    logs = s.pop("_logs")
    assert proc.returncode == 0, logs
    assert s["mode"] == "processes" and s["instruction"] == "press the button from the top"
    c = s["counts"]
    # frames: those the bringup monitor received; like any display it subscribes best effort (depth 5) and
    # drops frames while it falls behind, so 25 commands do not imply any fixed number above the 10 the
    # latency check needs (19 seen on a fresh clone's suite run, 20 was asked)
    assert c["frames"] >= 10 and c["tokens"] >= 3 and c["flow_plans"] >= 3, (c, logs)
    assert c["markers"] >= 3 and c["plan_images"] >= 3 and c["nonzero_commands"] >= 10, (c, logs)
    assert len(s["last_tokens"]) == 4 and s["latency_ms"]["n"] >= 10
    assert all(code == 0 for code in s["exit_codes"].values()), s["exit_codes"]  # clean SIGINT shutdown
    assert "[qos]" not in logs, logs  # the graph's own endpoints all match one another

    from mcap_ros2.reader import read_ros2_messages

    topics = Counter(m.channel.topic for m in read_ros2_messages(str(mcap)))
    for t in ("/sof/instruction", "/sof/camera/image", "/sof/policy/tokens", "/sof/policy/flow_plan",
              "/sof/cmd/twist", "/sof/sim/success"):
        assert topics[t] >= 1, (t, topics)
    assert topics["/sof/cmd/twist"] >= 10


@pytest.mark.timeout(90)
def test_composed_single_process(ros_env, tmp_path):
    proc, s = run_bringup(["sim", "--composed", "--seconds", "60", "--until-commands", "8", *FAKE, *FAST_START],
                          tmp_path, 80)
    logs = s.pop("_logs")
    assert proc.returncode == 0, logs
    assert s["mode"] == "composed"
    assert s["counts"]["tokens"] >= 2 and s["counts"]["nonzero_commands"] >= 5, (s, logs)


def _tasks() -> list[str]:
    return [t for t in os.environ.get("SOF_ROS_IT_TASKS", "button-press-topdown,handle-press").split(",") if t]


@pytest.mark.timeout(400)
@pytest.mark.skipif(not CHECKPOINT.is_dir(), reason=f"shipped checkpoint {CHECKPOINT} is missing "
                    "(train / ship models/sof_metaworld to run the end-to-end success test)")
def test_sim_task_success_with_the_shipped_checkpoint(ros_env, tmp_path):
    """Separate processes, the real SOF policy: at least one task succeeds. Tasks: $SOF_ROS_IT_TASKS
    (comma separated), held-out seed 1000; lockstep at 30 Hz (same steps as the offline eval, faster)."""
    rate = "30.0"
    results = {}
    for i, task in enumerate(_tasks()):
        d = tmp_path / task
        d.mkdir()
        proc, s = run_bringup(["sim", "--task", task, "--until-success", "--seconds", "120", "--checkpoint", str(CHECKPOINT),
                               "--param", "sof_sim_bridge.seed=1000", "--param", "sof_sim_bridge.max_steps=150",
                               "--param", f"sof_sim_bridge.rate_hz={rate}",
                               "--param", f"sof_flow2action.robot.control_rate_hz={rate}",
                               "--param", "sof_flow2action.robot.max_linear_speed=0.6", *FAST_START], d, 180)
        logs = s.pop("_logs")
        assert not s["died"], logs
        assert s["counts"]["tokens"] >= 1 and s["counts"]["commands"] >= 1, (s, logs)
        results[task] = s
        if s["success"]:
            break
    assert any(s["success"] for s in results.values()), {t: (s["counts"], s["last_status"]) for t, s in results.items()}


V2 = ROOT / "models" / "sof_metaworld_v2"


@pytest.mark.timeout(200)
@pytest.mark.skipif(not V2.is_dir(), reason=f"shipped checkpoint {V2} is missing")
def test_the_learning_free_row_presses_the_button_through_the_graph(ros_env, tmp_path):
    """The learning-free row as separate processes: Flow2Action tracks the object the sim bridge's
    segmentation marks, on frames rendered as the checkpoint's were -- the episode sof-eval presses
    in 41 steps (button-press, corner, seed 1000). Without the masks the graph did not press it
    in 200 steps (docs/learning_free.md, benchmarks/results/graph_parity.md)."""
    row = "sof_learning_free"
    proc, s = run_bringup(["sim", "--task", "button-press", "--until-done", "--seconds", "150", "--checkpoint", str(V2),
                           "--param", f"sof_policy.agent.policy={row}", "--param", f"sof_flow2action.agent.policy={row}",
                           "--param", "sof_sim_bridge.seed=1000", "--param", "sof_sim_bridge.max_steps=120",
                           "--param", "sof_sim_bridge.rate_hz=30.0", "--param", "sof_flow2action.robot.control_rate_hz=30.0",
                           "--param", "sof_flow2action.robot.max_linear_speed=0.6", *FAST_START], tmp_path, 180)
    logs = s.pop("_logs")
    assert not s["died"], logs
    assert s["success"] and s["sim_steps"] is not None and s["sim_steps"] <= 60, (s, logs)


_LARGE_PUB = r"""
import sys, time
import numpy as np
import rclpy
from rclpy.node import Node
from sensor_msgs.msg import Image
from sof_ros.ros import conversions as cv, dds
from sof_ros.ros.base import sensor_qos
dds.configure()
rclpy.init()
node = Node("large_frame_pub")
pi = node.create_publisher(Image, "/sof_test/image", sensor_qos(2))
pd = node.create_publisher(Image, "/sof_test/depth", sensor_qos(2))
end = time.monotonic() + 20
while pi.get_subscription_count() < 1 or pd.get_subscription_count() < 1:
    assert time.monotonic() < end, "no subscriber"
    time.sleep(0.05)
time.sleep(0.5)
rgb, depth = np.zeros((480, 640, 3), np.uint8), np.ones((480, 640), np.float32)
for i in range(1, 31):  # a RealSense-sized frame (1.2 MB depth + 0.9 MB colour) every 50 ms
    pd.publish(cv.image_to_msg(depth, "32FC1", i))
    pi.publish(cv.image_to_msg(rgb, "rgb8", i))
    time.sleep(0.05)
time.sleep(1.0)
"""


@pytest.mark.timeout(60)
def test_camera_sized_best_effort_frames_cross_processes(ros):
    """sof_ros.ros.dds: 640x480 best-effort frames between processes arrive (with Fast DDS's default
    512 KiB shared-memory segment most of them were dropped)."""
    from sensor_msgs.msg import Image

    from sof_ros.ros.base import sensor_qos

    imgs = ros.collect(Image, "/sof_test/image", sensor_qos(2))
    depths = ros.collect(Image, "/sof_test/depth", sensor_qos(2))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", _LARGE_PUB], cwd=ROOT, env=env, capture_output=True, text=True, timeout=45)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert ros.wait_for(lambda: len(imgs) >= 29 and len(depths) >= 29, 3), (len(imgs), len(depths))
    assert (imgs[-1].width, imgs[-1].height, depths[-1].encoding) == (640, 480, "32FC1")


@pytest.mark.timeout(150)
def test_loop_bench_writes_the_results_schema(ros_env, tmp_path):
    """`sof-bench loop`, short, with the agent double: separate processes, three sizes, latencies with
    inference (frame -> plan, frame -> command from that plan, plan age), sim-bridge rates."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "test"), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "sof_ros.bench.cli", "loop", "--frames", "24", "--warmup", "4", "--sim-seconds", "2",
           "--policy", "ros_test_doubles:FakeAgent", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=140)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    r = json.loads((tmp_path / "loop.json").read_text())
    assert isinstance(r["command"], str) and r["command"].startswith("sof-bench loop")
    assert isinstance(r["commit"], str) and isinstance(r["machine"], str)
    assert set(r["resolutions"]) == {"128x128", "320x240", "640x480"}
    for v in r["resolutions"].values():
        for k in ("frame_to_plan_ms", "frame_to_command_ms", "plan_age_ms"):
            assert isinstance(v[k]["p50"], float) and isinstance(v[k]["p95"], float)
            assert 0 < v[k]["p50"] <= v[k]["p95"], (k, v[k])
            lo, hi = v[k]["p95_ci95"]
            assert lo <= v[k]["p95"] <= hi <= v[k]["max"], (k, v[k])
        assert isinstance(v["hz"], float) and v["hz"] > 0 and v["answered"] >= 5 and v["plans"] >= 3
    assert isinstance(r["sim_bridge_hz"], float) and r["sim_bridge_hz"] > 0
    md = (tmp_path / "loop.md").read_text()
    assert "| 128x128 |" in md and "| 640x480 |" in md and "sim_bridge_hz" in md


HANGS_ON_SHUTDOWN = """
import time
from rclpy.node import Node
from sof_ros.ros.base import run_node

class HangsOnShutdown(Node):
    def __init__(self):
        super().__init__("hangs_on_shutdown")
        print("spinning", flush=True)

    def close(self):
        time.sleep(60)  # stuck in shutdown, as a node blocked in a middleware call would be

raise SystemExit(run_node(HangsOnShutdown, []))
"""


@pytest.mark.timeout(60)
def test_a_node_that_hangs_on_shutdown_is_killed_with_its_stacks_in_its_log(ros_env, tmp_path):
    """sof-bringup SIGINTs its node processes and kills one still running after the grace period;
    before that it asks it (SIGUSR1, faulthandler registered by run_node) where it hangs, so the
    log says more than exit code -9."""
    from sof_ros.ros.bringup import _stop_processes

    log = tmp_path / "hangs.log"
    out = open(log, "w")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", HANGS_ON_SHUTDOWN], cwd=ROOT, env=env, stdout=out,
                            stderr=subprocess.STDOUT)
    t0 = time.monotonic()
    while "spinning" not in log.read_text() and proc.poll() is None and time.monotonic() - t0 < 30:
        time.sleep(0.1)
    assert proc.poll() is None, log.read_text()
    codes = _stop_processes([("hangs", proc, out)], grace_s=2.0)
    text = log.read_text()
    assert codes == {"hangs": -9}, (codes, text)
    assert "most recent call first" in text and "in close" in text, text


_STARTER = r"""
import subprocess, sys, time
from sof_ros.ros.bringup import node_popen
child = node_popen([sys.executable, "-c", "from sof_ros.ros.base import die_with_parent; die_with_parent(); "
                    "import time; print('up', flush=True); time.sleep(120)"], stdout=subprocess.PIPE, text=True)
assert child.stdout.readline().strip() == "up"
print(child.pid, flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    """Running, not a zombie (a container's PID 1 may never reap the orphan)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


_SIGNALLED_NODE = r"""
import os, signal, sys, time
from rclpy.node import Node
from sof_ros.ros.base import run_node

class SignalledInACallback(Node):
    def __init__(self):
        super().__init__("signalled_in_a_callback")
        self.create_timer(0.05, self.tick)

    def tick(self):
        os.kill(os.getpid(), signal.{sig})  # the stop arrives while this callback runs
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            pass  # Python bytecode, where a KeyboardInterrupt would land
        print("callback finished", flush=True)

    def close(self):
        print("closed", flush=True)

sys.exit(run_node(SignalledInACallback, []))
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_stop_signal_lets_the_running_callback_finish(ros_env, sig):
    """sof-bringup's SIGINT (and ros2 launch's SIGTERM) used to raise inside whatever callback ran,
    which could cut the recorder's MCAP writer mid-record and left nodes' state half-updated before
    close(). A stop now takes effect between callbacks, and the node's close() still runs."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", _SIGNALLED_NODE.replace("{sig}", sig)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["callback", "finished", "closed"], proc.stdout + proc.stderr[-3000:]


def test_a_recorder_stopped_while_starting_leaves_a_readable_recording(ros_env, tmp_path, monkeypatch):
    """A recorder stopped before its first discovery (a graph that ended while it started, Ctrl-C)
    left an MCAP file with a header and no footer, which no reader opens."""
    import rclpy
    from mcap.reader import make_reader
    from rclpy.context import Context
    from rclpy.parameter import Parameter

    from sof_ros.ros.recorder_node import RecorderNode

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(RecorderNode, "_discover", interrupted)
    ctx = Context()
    rclpy.init(context=ctx, domain_id=ros_env)
    path = tmp_path / "run.mcap"
    try:
        with pytest.raises(KeyboardInterrupt):
            RecorderNode(context=ctx, parameter_overrides=[Parameter("path", value=str(path))])
    finally:
        rclpy.try_shutdown(context=ctx)
    with open(path, "rb") as f:
        assert list(make_reader(f).iter_messages()) == []


@pytest.mark.timeout(60)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_node_processes_do_not_outlive_a_killed_starter():
    """A bringup or loop bench killed with SIGKILL (a test's timeout) left its nodes publishing plans
    and twists on the DDS domain the next graph used; they now get SIGINT when their starter dies --
    also when the starter ignores SIGINT, as a background job of a non-interactive shell (or nohup) does
    and its children inherit: that node ignored its death signal (the suite failed when run that way)."""
    import signal

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    starter = subprocess.Popen([sys.executable, "-c", _STARTER], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        pid = int(starter.stdout.readline())
        os.kill(pid, 0)  # the node runs
        starter.kill()
        starter.wait()
        end = time.monotonic() + 20
        while time.monotonic() < end and _alive(pid):
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, 9)
            raise AssertionError("the node outlived the process that started it")
    finally:
        starter.kill()
