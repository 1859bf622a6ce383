"""SafetyFilter: clamping, rejection, watchdog, e-stop (pure NumPy, no ROS)."""
import math

import numpy as np
import pytest

from sof_ros.safety import OK, EstopStore, RobotLimits, SafeCommand, SafetyFilter, WatchdogTimeouts

pytestmark = pytest.mark.timeout(30)

LIMITS = RobotLimits(workspace_min=(-0.5, 0.4, 0.05), workspace_max=(0.5, 1.0, 0.5),
                     max_linear_speed=0.2, max_angular_speed=0.5)


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def fresh_filter(monitored=("frame", "plan", "pose")):
    clock = Clock()
    f = SafetyFilter(LIMITS, WatchdogTimeouts(frame=0.5, plan=2.0, command=0.5, pose=0.5), monitored, clock)
    for s in ("frame", "plan", "pose", "command"):
        f.heartbeat(s)
    return f, clock


def test_ok_command_passes_unchanged():
    f, _ = fresh_filter()
    cmd, reason = f.filter_twist([0.05, 0.0, -0.02], [0, 0, 0.1], gripper=0.3, ee_pos=[0.0, 0.7, 0.2], dt=0.1)
    assert reason == OK
    np.testing.assert_allclose(cmd.linear, [0.05, 0.0, -0.02])
    np.testing.assert_allclose(cmd.angular, [0, 0, 0.1])
    assert cmd.gripper == pytest.approx(0.3)


def test_speed_clamped_keeps_direction():
    f, _ = fresh_filter()
    cmd, reason = f.filter_twist([0.3, 0.4, 0.0], [0, 0, 2.0], ee_pos=[0.0, 0.7, 0.2], dt=0.1)
    assert reason.startswith("clamped") and "linear speed 0.500" in reason and "angular speed" in reason
    assert np.linalg.norm(cmd.linear) == pytest.approx(0.2)
    np.testing.assert_allclose(cmd.linear / np.linalg.norm(cmd.linear), [0.6, 0.8, 0.0])
    assert np.linalg.norm(cmd.angular) == pytest.approx(0.5)


def test_out_of_box_motion_clamped_at_the_boundary():
    f, _ = fresh_filter()
    # 0.49 + 0.2 m/s * 0.1 s would leave the box at x = 0.5: only 0.01 m of motion is allowed
    cmd, reason = f.filter_twist([0.2, 0.0, 0.0], ee_pos=[0.49, 0.7, 0.2], dt=0.1)
    assert "workspace x<=0.500" in reason
    assert cmd.linear[0] == pytest.approx(0.1)
    # outside the box already: motion further out is zeroed, motion back in passes
    cmd, reason = f.filter_twist([0.1, 0.0, -0.1], ee_pos=[0.6, 0.7, 0.03], dt=0.1)
    assert cmd.linear[0] == 0.0 and cmd.linear[2] == 0.0 and reason.startswith("clamped")
    cmd, reason = f.filter_twist([-0.1, 0.0, 0.1], ee_pos=[0.6, 0.7, 0.03], dt=0.1)
    assert reason == OK and cmd.linear[0] == pytest.approx(-0.1) and cmd.linear[2] == pytest.approx(0.1)


def test_out_of_box_target_clamped():
    f, _ = fresh_filter()
    cmd, reason = f.filter_target([0.9, 0.2, 0.3], ee_pos=[0.0, 0.7, 0.2])
    np.testing.assert_allclose(cmd.target, [0.5, 0.4, 0.3])
    assert reason.startswith("clamped") and "workspace box" in reason
    cmd, reason = f.filter_target([0.1, 0.6, 0.3])
    assert reason == OK and cmd.target is not None


@pytest.mark.parametrize("bad", [[math.nan, 0, 0], [0, math.inf, 0], [0, 0], "up", None, [[0, 0, 0]] * 2])
def test_malformed_linear_rejected(bad):
    f, _ = fresh_filter()
    cmd, reason = f.filter_twist(bad, ee_pos=[0.0, 0.7, 0.2])
    assert cmd.is_zero and reason.startswith("rejected")


def test_nan_angular_gripper_target_rejected():
    f, _ = fresh_filter()
    for cmd, reason in (f.filter_twist([0, 0, 0.01], [0, math.nan, 0], ee_pos=[0, 0.7, 0.2]),
                        f.filter_twist([0, 0, 0.01], gripper=math.nan, ee_pos=[0, 0.7, 0.2]),
                        f.filter_target([0.0, math.nan, 0.2]),
                        f.filter_twist([0, 0, 0.01], ee_pos=[0, math.nan, 0.2])):
        assert cmd.is_zero and cmd.gripper is None and reason.startswith("rejected"), reason


def test_motion_without_ee_position_rejected():
    f, _ = fresh_filter()
    cmd, reason = f.filter_twist([0.05, 0, 0], ee_pos=None)
    assert cmd.is_zero and "end-effector position" in reason
    cmd, reason = f.filter_twist([0, 0, 0], gripper=1.0, ee_pos=None)  # no motion: nothing to enforce
    assert reason == OK and cmd.gripper == 1.0


def test_stale_input_gives_zero_command_within_timeout():
    f, clock = fresh_filter()
    assert f.tick() == (None, OK)
    clock.t += 0.4  # < frame timeout 0.5
    f.heartbeat("command")
    assert f.tick() == (None, OK)
    clock.t += 0.11  # frame now 0.51 s old
    cmd, reason = f.tick()
    assert cmd is not None and cmd.is_zero and reason.startswith("stale frame") and "0.510" in reason
    cmd, reason = f.filter_twist([0.05, 0, 0], ee_pos=[0, 0.7, 0.2])
    assert cmd.is_zero and reason.startswith("stale frame")
    f.heartbeat("frame")
    cmd, reason = f.filter_twist([0.05, 0, 0], ee_pos=[0, 0.7, 0.2])
    assert reason.startswith("stale pose")  # pose is stale too (0.51 s)
    f.heartbeat("pose")
    assert f.filter_twist([0.05, 0, 0], ee_pos=[0, 0.7, 0.2])[1] == OK


def test_stale_command_and_never_received():
    f, clock = fresh_filter()
    clock.t += 0.3
    for s in ("frame", "plan", "pose"):
        f.heartbeat(s)
    clock.t += 0.3  # command 0.6 s old, the rest 0.3 s
    cmd, reason = f.tick()
    assert cmd.is_zero and reason.startswith("stale command")
    g = SafetyFilter(LIMITS, clock=Clock())
    cmd, reason = g.tick()
    assert cmd.is_zero and "none received yet" in reason


def test_estop_latches_until_cleared():
    f, clock = fresh_filter()
    cmd, reason = f.estop("operator button")
    assert cmd.is_zero and f.estopped and "operator button" in reason
    f.estop("second press")  # the first reason stays
    for s in ("frame", "plan", "pose", "command"):
        f.heartbeat(s)
    for _ in range(3):  # fresh inputs, valid commands: still stopped
        cmd, reason = f.filter_twist([0.05, 0, 0], gripper=1.0, ee_pos=[0, 0.7, 0.2])
        assert cmd.is_zero and cmd.gripper is None and reason == "e-stop latched: operator button"
        assert f.filter_target([0, 0.7, 0.2])[0].is_zero
        assert f.tick()[0].is_zero
        clock.t += 0.01
    msg = f.clear_estop()
    assert "cleared" in msg and not f.estopped
    # inputs from before the stop do not count: motion resumes only on new data
    assert f.filter_twist([0.05, 0, 0], ee_pos=[0, 0.7, 0.2])[1].startswith("stale")
    for s in ("frame", "plan", "pose"):
        f.heartbeat(s)
    cmd, reason = f.filter_twist([0.05, 0, 0], ee_pos=[0, 0.7, 0.2])
    assert reason == OK and not cmd.is_zero


def test_gripper_clipped_and_invalid_limits_refused():
    f, _ = fresh_filter()
    assert f.filter_twist([0, 0, 0], gripper=3.0, ee_pos=[0, 0.7, 0.2])[0].gripper == 1.0
    with pytest.raises(ValueError):
        SafetyFilter(RobotLimits(workspace_min=(0, 0, 0), workspace_max=(1, -1, 1)))
    with pytest.raises(ValueError):
        SafetyFilter(RobotLimits(max_linear_speed=math.nan))
    assert SafeCommand.stop().is_zero


def test_estop_store_outlives_the_process_and_fails_safe(tmp_path, monkeypatch):
    import json
    import os

    store = EstopStore(tmp_path / "deep" / "f2a.estop.json")
    assert store.load() is None  # no file yet: nothing latched
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    store.save("operator button")
    assert len(synced) == 2  # the file and the directory entry of the rename, before save returns
    assert EstopStore(store.path).load() == "operator button"  # a new process reads it back
    assert sorted(os.listdir(tmp_path / "deep")) == ["f2a.estop.json"]  # no temporary left behind
    store.save(None)
    assert store.load() is None and json.loads(open(store.path).read())["latched"] is False
    for bad in ("{truncated", '{"latched": "no"}', "[]"):
        with open(store.path, "w") as f:
            f.write(bad)
        assert "treating it as latched" in store.load()
