"""The README's demo, on one task: data engine outputs, the ROS graph reaching success, MCAP + PNG + GIF."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rclpy")
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(300)
def test_demo_one_task(ros_env, tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "sof_ros.demo", "--tasks", "handle-press", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads((out / "demo.json").read_text())
    assert report["data_engine"]["expert_success"]["handle-press"] == 1.0
    assert list((out / "flow_viz").glob("*_strip.png")), "no flow visualisation strip"
    t = report["tasks"]["handle-press"]
    assert t["success"], t
    for key in ("mcap", "strip", "gif"):
        assert Path(t[key]).stat().st_size > 1000, key
    assert "per-task success 1.00" in proc.stdout


def test_demo_missing_checkpoint_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sof_ros.demo", "--checkpoint", str(tmp_path / "none"),
                           "--skip-data"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "sof-train --config config/metaworld.yaml" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
