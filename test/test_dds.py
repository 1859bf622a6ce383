"""DDS settings of every sof_ros entry point (sof_ros/ros/dds.py, docs/network.md): the Fast DDS
profile under both variable names, and the graph kept on this machine unless SOF_ROS_NETWORK=lan --
for sof-bringup, the node executables and the launch description."""
from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from sof_ros.errors import SofError
from sof_ros.ros import dds

pytestmark = pytest.mark.timeout(90)
ROOT = Path(__file__).resolve().parents[1]
HOSTILE = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET", "ROS_STATIC_PEERS": "192.0.2.77"}  # a LAN-wide user setup


@pytest.fixture
def clean_env(monkeypatch):
    """No network mode, profile or discovery settings from this machine's environment; everything
    configure() sets in os.environ is undone afterwards."""
    for key in (dds.NETWORK_VAR, *dds.PROFILE_VARS, *dds.DISCOVERY_VARS, "RMW_IMPLEMENTATION", "ROS_DISTRO"):
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def assert_localhost(env: dict) -> None:
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST" and env["ROS_STATIC_PEERS"] == ""
    fastdds, fastrtps = env["FASTDDS_DEFAULT_PROFILES_FILE"], env["FASTRTPS_DEFAULT_PROFILES_FILE"]
    assert fastdds == fastrtps  # Fast DDS 3.x (Kilted) and 2.x (Jazzy) read the same profile
    xml = Path(fastdds).read_text()
    assert "<address>127.0.0.1</address>" in xml and "<segment_size>" in xml


# --- the environment itself ---------------------------------------------------------------------
def test_default_is_localhost_with_both_profile_variables():
    env = dict(HOSTILE)
    extra = dds.configure(env)
    assert_localhost(env)
    assert set(extra) == {"ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_STATIC_PEERS", *dds.PROFILE_VARS}
    assert dds.network_mode({dds.NETWORK_VAR: " LocalHost "}) == "localhost"


def test_lan_keeps_the_users_discovery_and_drops_the_whitelist():
    env = {**HOSTILE, dds.NETWORK_VAR: "lan"}
    extra = dds.configure(env)
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SUBNET" and env["ROS_STATIC_PEERS"] == "192.0.2.77"
    assert set(extra) == set(dds.PROFILE_VARS)
    xml = Path(env["FASTRTPS_DEFAULT_PROFILES_FILE"]).read_text()
    assert "interfaceWhiteList" not in xml and "<segment_size>" in xml
    assert env["FASTDDS_DEFAULT_PROFILES_FILE"] == env["FASTRTPS_DEFAULT_PROFILES_FILE"]


@pytest.mark.parametrize("var", dds.PROFILE_VARS)
def test_a_users_own_profile_is_kept(var):
    env = {var: "/mine.xml"}
    dds.configure(env)
    assert env[var] == "/mine.xml" and len([v for v in dds.PROFILE_VARS if v in env]) == 1
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"  # discovery is still kept local


def test_humble_also_gets_ros_localhost_only():
    assert dds.discovery_environment({"ROS_DISTRO": "humble"})["ROS_LOCALHOST_ONLY"] == "1"
    assert "ROS_LOCALHOST_ONLY" not in dds.discovery_environment({"ROS_DISTRO": "jazzy"})


def test_other_rmw_gets_localhost_discovery_but_no_fastdds_profile():
    env = {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}
    assert dds.process_environment(env) == {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_STATIC_PEERS": ""}


def test_bad_network_mode_is_a_clear_error():
    with pytest.raises(SofError, match="SOF_ROS_NETWORK must be one of localhost, lan"):
        dds.configure({dds.NETWORK_VAR: "internet"})


# --- entry points -------------------------------------------------------------------------------
def test_bringup_default_is_localhost(clean_env, capsys):
    from sof_ros.ros import bringup

    for k, v in HOSTILE.items():
        clean_env.setenv(k, v)
    assert bringup.main(["sim", "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert_localhost(json.loads(captured.out)["dds_environment"])
    assert_localhost(os.environ)  # what the monitor node and every node process inherit
    assert "SOF_ROS_NETWORK=lan" in captured.err  # says it narrowed the user's SUBNET


def test_bringup_lan_keeps_the_users_settings(clean_env, capsys):
    from sof_ros.ros import bringup

    for k, v in {**HOSTILE, dds.NETWORK_VAR: "lan"}.items():
        clean_env.setenv(k, v)
    assert bringup.main(["sim", "--dry-run"]) == 0
    env = json.loads(capsys.readouterr().out)["dds_environment"]
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SUBNET" and "127.0.0.1" not in Path(env[dds.PROFILE_VARS[1]]).read_text()


def test_bringup_and_nodes_refuse_a_bad_network_mode(clean_env):
    env = dict(os.environ, SOF_ROS_NETWORK="wan", PYTHONPATH=str(ROOT))
    for module in ("sof_ros.ros.bringup", "sof_ros.ros.camera_node"):
        args = ["sim", "--dry-run"] if module.endswith("bringup") else []
        proc = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 2 and "SOF_ROS_NETWORK must be one of" in proc.stderr, (module, proc.stderr[-2000:])


def launch_entries(monkeypatch, robot: str = "sim", **args) -> list[dict]:
    """Node kwargs the launch file produces (launch / launch_ros stand-ins, as in test_graph.py)."""
    import importlib.util

    mods = {n: types.ModuleType(n) for n in ("launch", "launch.actions", "launch.substitutions", "launch_ros",
                                             "launch_ros.actions")}

    class Recorder:
        def __init__(self, *a, **kw):
            self.args, self.kwargs = a, kw

    class LaunchConfiguration:
        def __init__(self, name):
            self.name = name

        def perform(self, context):
            return context[self.name]

    mods["launch"].LaunchDescription = lambda entities: list(entities)
    mods["launch.actions"].DeclareLaunchArgument = type("DeclareLaunchArgument", (Recorder,), {})
    mods["launch.actions"].OpaqueFunction = lambda function: function
    mods["launch.substitutions"].LaunchConfiguration = LaunchConfiguration
    mods["launch_ros.actions"].Node = type("Node", (Recorder,), {})
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    spec = importlib.util.spec_from_file_location(f"sof_{robot}_launch", ROOT / "launch" / f"sof_{robot}.launch.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    entities = mod.generate_launch_description()
    values = {e.args[0]: e.kwargs["default_value"] for e in entities if not callable(e)}
    values.update(args)
    return [n.kwargs for e in entities if callable(e) for n in e(values)]


def test_launch_description_default_is_localhost(clean_env):
    for k, v in HOSTILE.items():
        clean_env.setenv(k, v)
    entries = launch_entries(clean_env, rviz="true")
    assert {e["package"] for e in entries} == {"sof_ros", "rviz2"}
    for e in entries:  # every process the launch file starts, RViz included
        assert_localhost(e["additional_env"])


def test_launch_description_lan(clean_env):
    for k, v in {**HOSTILE, dds.NETWORK_VAR: "lan"}.items():
        clean_env.setenv(k, v)
    for e in launch_entries(clean_env):
        env = e["additional_env"]
        assert "ROS_AUTOMATIC_DISCOVERY_RANGE" not in env  # the user's SUBNET is inherited
        assert "127.0.0.1" not in Path(env["FASTDDS_DEFAULT_PROFILES_FILE"]).read_text()


# --- what Fast DDS actually does with it: sockets of a node executable --------------------------
def _udp_sockets(pid: int) -> list[tuple[str, int]]:
    """(address, port) of the UDPv4 sockets process `pid` holds, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = []
    for line in Path(f"/proc/{pid}/net/udp").read_text().splitlines()[1:]:
        cols = line.split()
        if cols[9] in inodes:
            hexaddr, hexport = cols[1].split(":")
            out.append((socket.inet_ntoa(struct.pack("<I", int(hexaddr, 16))), int(hexport, 16)))
    return out


def _node_sockets(domain: int, user_env: dict) -> list[tuple[str, int]]:
    """Start the camera node executable (source topic) in the user environment `user_env`; return
    its sockets on this domain's DDS ports (7400 + 250 * domain + 0..249)."""
    env = {k: v for k, v in os.environ.items() if k not in (dds.NETWORK_VAR, *dds.PROFILE_VARS, *dds.DISCOVERY_VARS)}
    env.update(user_env, ROS_DOMAIN_ID=str(domain), PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "sof_ros.ros.camera_node", "--ros-args", "-p", "source:=topic",
           "-p", "flow_enabled:=false", "-p", "camera_pose_source:=none"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = 7400 + 250 * domain
    try:
        end, socks = time.monotonic() + 30, []
        while time.monotonic() < end and proc.poll() is None:
            socks = [s for s in _udp_sockets(proc.pid) if base <= s[1] < base + 250]
            if len(socks) >= 2:  # participant discovery + user data unicast ports
                time.sleep(0.5)
                socks = [s for s in _udp_sockets(proc.pid) if base <= s[1] < base + 250]
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        return socks
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.skipif(not Path("/proc/self/net/udp").is_file(), reason="needs Linux /proc")
def test_node_executable_listens_on_loopback_only(ros_env):
    """Default: every DDS port the node listens on is bound to 127.0.0.1 (the profile's whitelist,
    read by this Fast DDS under its own variable name) and no multicast discovery socket is open
    (LOCALHOST range), although the user's environment asked for SUBNET."""
    pytest.importorskip("rclpy")
    socks = _node_sockets(ros_env, HOSTILE)
    assert len(socks) >= 2 and all(addr == "127.0.0.1" for addr, _ in socks), socks
    assert all(port != 7400 + 250 * ros_env for _, port in socks), socks  # the multicast discovery port


@pytest.mark.skipif(not Path("/proc/self/net/udp").is_file(), reason="needs Linux /proc")
def test_node_executable_lan_listens_on_all_interfaces(ros_env):
    """SOF_ROS_NETWORK=lan drops the whitelist: the same node listens beyond loopback (so the test
    above can fail). The user's discovery range here is LOCALHOST, which lan keeps: no LAN traffic."""
    pytest.importorskip("rclpy")
    socks = _node_sockets(ros_env, {dds.NETWORK_VAR: "lan", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"})
    assert any(addr != "127.0.0.1" for addr, _ in socks), socks
