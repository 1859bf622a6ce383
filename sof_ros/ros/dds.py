"""DDS settings every sof_ros process starts with: camera-sized messages, and the graph kept on this
machine unless asked otherwise (docs/network.md).

Large frames. With Fast DDS's default shared-memory segment (512 KiB per participant), a
best-effort 320x240 frame (230 KB rgb8 + 307 KB 32FC1 depth) is often dropped on the same host and
a 640x480 one (RealSense) mostly is: the writer cannot place the sample in its segment and best
effort does not retry. Every sof_ros process (nodes, sof-bringup, the launch files, sof-bench loop,
the tests) therefore starts Fast DDS with the profile below -- a 32 MiB shared-memory segment plus
UDPv4 with 4 MiB socket buffers -- unless the user already chose a profile or another RMW. Fast DDS
3.x (Kilted) reads FASTDDS_DEFAULT_PROFILES_FILE, Fast DDS 2.x (Jazzy, Humble) reads
FASTRTPS_DEFAULT_PROFILES_FILE: both are set to the same file. A user's own setting of either one
wins (then neither is touched). Camera drivers outside sof_ros that publish large images to the
camera node need the same profile: `python -m sof_ros.ros.dds` prints its path.

Network. By default ($SOF_ROS_NETWORK unset or `localhost`) the graph stays on this machine:
ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST (ROS_LOCALHOST_ONLY=1 on Humble), no static peers, and the
profile's UDPv4 transport bound to 127.0.0.1 (interfaceWhiteList, the same element in Fast DDS 2.14
and 3.x) -- without it Fast DDS listens on 0.0.0.0 even with LOCALHOST discovery. SOF_ROS_NETWORK=lan
keeps the user's discovery variables as they are and drops the whitelist (secure it with SROS2;
see docs/network.md).
"""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path

from sof_ros.errors import SofError

PARENT_PID_ENV = "SOF_ROS_PARENT_PID"  # set by sof-bringup / the loop bench for their node processes (base.die_with_parent)

PROFILE_VARS = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
NETWORK_VAR = "SOF_ROS_NETWORK"
NETWORK_MODES = ("localhost", "lan")
SHM_SEGMENT_BYTES = 32 * 1024 * 1024
SOCKET_BUFFER_BYTES = 4 * 1024 * 1024

_UDP_LOCALHOST = """
      <interfaceWhiteList>
        <address>127.0.0.1</address>
      </interfaceWhiteList>"""


def profile_xml(network: str = "localhost") -> str:
    """The Fast DDS XML profile for `network` (localhost: UDPv4 bound to 127.0.0.1; lan: all interfaces)."""
    whitelist = _UDP_LOCALHOST if network == "localhost" else ""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- sof_ros ({network}): large shared-memory segment so best-effort camera frames are not dropped (sof_ros/ros/dds.py) -->
<profiles xmlns="http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles">
  <transport_descriptors>
    <transport_descriptor>
      <transport_id>sof_shm</transport_id>
      <type>SHM</type>
      <segment_size>{SHM_SEGMENT_BYTES}</segment_size>
    </transport_descriptor>
    <transport_descriptor>
      <transport_id>sof_udp</transport_id>
      <type>UDPv4</type>
      <sendBufferSize>{SOCKET_BUFFER_BYTES}</sendBufferSize>
      <receiveBufferSize>{SOCKET_BUFFER_BYTES}</receiveBufferSize>{whitelist}
    </transport_descriptor>
  </transport_descriptors>
  <participant profile_name="sof_ros_participant" is_default_profile="true">
    <rtps>
      <userTransports>
        <transport_id>sof_shm</transport_id>
        <transport_id>sof_udp</transport_id>
      </userTransports>
      <useBuiltinTransports>false</useBuiltinTransports>
    </rtps>
  </participant>
</profiles>
"""


PROFILE_XML = profile_xml("localhost")  # the default profile


def network_mode(env=None) -> str:
    """'localhost' (default) or 'lan', from $SOF_ROS_NETWORK; SofError for anything else."""
    env = os.environ if env is None else env
    mode = (env.get(NETWORK_VAR) or "localhost").strip().lower()
    if mode not in NETWORK_MODES:
        raise SofError(f"{NETWORK_VAR} must be one of {', '.join(NETWORK_MODES)} (unset = localhost), "
                       f"got '{env.get(NETWORK_VAR)}'; see docs/network.md")
    return mode


def profile_path(network: str = "localhost") -> Path:
    """The profile written to the temp directory (content-addressed, so concurrent writers agree)."""
    xml = profile_xml(network)
    digest = hashlib.sha1(xml.encode()).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"sof_ros_fastdds_{digest}.xml"
    if not path.is_file() or path.read_text() != xml:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(xml)
        os.replace(tmp, path)
    return path


def uses_fastdds(env=None) -> bool:
    rmw = (os.environ if env is None else env).get("RMW_IMPLEMENTATION", "")
    return rmw in ("", "rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp")


def environment(env=None) -> dict[str, str]:
    """Fast DDS profile variables to add to `env` (default os.environ): both names, pointing at the
    profile for the network mode -- none if the user set either one, or the RMW is not Fast DDS."""
    env = os.environ if env is None else env
    if not uses_fastdds(env) or any(env.get(v) for v in PROFILE_VARS):
        return {}
    network = network_mode(env)
    try:
        path = str(profile_path(network))
    except OSError as exc:  # e.g. a read-only temp directory: run with Fast DDS's defaults
        print(f"sof_ros: cannot write the Fast DDS profile ({exc}); large camera frames may be dropped"
              + (" and the UDP transport is not bound to 127.0.0.1" if network == "localhost" else ""),
              file=sys.stderr)
        return {}
    return {v: path for v in PROFILE_VARS}


def discovery_environment(env=None) -> dict[str, str]:
    """ROS discovery variables for the network mode: localhost -> LOCALHOST range, no static peers
    (and ROS_LOCALHOST_ONLY=1 on Humble, which predates the range variable); lan -> nothing (the
    user's own settings stay)."""
    env = os.environ if env is None else env
    if network_mode(env) == "lan":
        return {}
    out = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_STATIC_PEERS": ""}
    if env.get("ROS_DISTRO", "").lower() == "humble":
        out["ROS_LOCALHOST_ONLY"] = "1"
    return out


def process_environment(env=None) -> dict[str, str]:
    """Everything a sof_ros process (or a process started by the launch files) gets: discovery + profile."""
    return {**discovery_environment(env), **environment(env)}


DISCOVERY_VARS = ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_STATIC_PEERS", "ROS_LOCALHOST_ONLY")


def current(env=None) -> dict[str, str]:
    """The DDS-related variables set in `env` (default os.environ), e.g. for sof-bringup --dry-run."""
    env = os.environ if env is None else env
    names = (NETWORK_VAR, "RMW_IMPLEMENTATION", "ROS_DOMAIN_ID", *DISCOVERY_VARS, *PROFILE_VARS)
    return {k: env[k] for k in names if k in env}


def configure(env=None) -> dict[str, str]:
    """Apply `process_environment()` to `env` (default os.environ) before rclpy.init; returns what
    was set. Says so on stderr when it narrows a discovery range the user had set."""
    env = os.environ if env is None else env
    extra = process_environment(env)
    old = env.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "")
    new = extra.get("ROS_AUTOMATIC_DISCOVERY_RANGE", old)
    if old and old.upper() != new.upper():
        print(f"sof_ros: DDS kept on this machine (ROS_AUTOMATIC_DISCOVERY_RANGE={new}, was {old}); "
              f"{NETWORK_VAR}=lan keeps your discovery settings (docs/network.md)", file=sys.stderr)
    env.update(extra)
    return extra


def main(argv: list[str] | None = None) -> int:
    """`python -m sof_ros.ros.dds`: the profile's path; `--export`: shell lines that give another
    process (a camera driver, MoveIt Servo) the settings a sof_ros process starts with."""
    import shlex

    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv == ["--export"]:
            for key, value in process_environment().items():
                print(f"export {key}={shlex.quote(value)}")
        elif not argv:
            print(profile_path(network_mode()))
        else:
            print("usage: python -m sof_ros.ros.dds [--export]", file=sys.stderr)
            return 2
    except SofError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
