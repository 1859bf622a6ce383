"""The SOF graph as separate processes on loopback DDS, started by sof-bringup exactly as deployed:
instruction in -> skill tokens, flow plans, commands out; the sim bridge reports task success."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("rclpy")

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "models" / "sof_metaworld"
FAKE = ["--param", "sof_policy.agent.agent_class=ros_test_doubles:FakeAgent",
        "--param", "sof_flow2action.agent.agent_class=ros_test_doubles:FakeAgent"]
FAST_START = ["--param", "sof_sim_bridge.lockstep_timeout_s=1.0"]


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
    proc, s = run_bringup(["sim", "--seconds", "14", "--record", str(mcap), *FAKE, *FAST_START], tmp_path, 90)
    logs = s.pop("_logs")
    assert proc.returncode == 0, logs
    assert s["mode"] == "processes" and s["instruction"] == "press the button from the top"
    c = s["counts"]
    assert c["frames"] >= 20 and c["tokens"] >= 3 and c["flow_plans"] >= 3, (c, logs)
    assert c["markers"] >= 3 and c["plan_images"] >= 3 and c["nonzero_commands"] >= 10, (c, logs)
    assert len(s["last_tokens"]) == 4 and s["latency_ms"]["n"] >= 10
    assert all(code == 0 for code in s["exit_codes"].values()), s["exit_codes"]  # clean SIGINT shutdown

    from mcap_ros2.reader import read_ros2_messages

    topics = Counter(m.channel.topic for m in read_ros2_messages(str(mcap)))
    for t in ("/sof/instruction", "/sof/camera/image", "/sof/policy/tokens", "/sof/policy/flow_plan",
              "/sof/cmd/twist", "/sof/sim/success"):
        assert topics[t] >= 1, (t, topics)
    assert topics["/sof/cmd/twist"] >= 10


@pytest.mark.timeout(90)
def test_composed_single_process(ros_env, tmp_path):
    proc, s = run_bringup(["sim", "--composed", "--seconds", "8", *FAKE, *FAST_START], tmp_path, 60)
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
    """Separate processes, the real SofAgent: at least one task succeeds. Tasks: $SOF_ROS_IT_TASKS
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
