"""Fast DDS transport settings for camera-sized messages.

Why: with Fast DDS's default shared-memory segment (512 KiB per participant), a best-effort
320x240 frame (230 KB rgb8 + 307 KB 32FC1 depth) is often dropped on the same host and a 640x480
one (RealSense) mostly is: the writer cannot place the sample in its segment and best effort does
not retry. Every sof_ros process (nodes, sof-bringup, sof-bench loop, the tests) therefore starts
Fast DDS with the profile below -- a 32 MiB shared-memory segment plus UDPv4 with 4 MiB socket
buffers -- unless the user already chose a profile (FASTDDS_DEFAULT_PROFILES_FILE or the older
FASTRTPS_DEFAULT_PROFILES_FILE) or another RMW. Camera drivers outside sof_ros that publish large
images to the camera node need the same profile: `python -m sof_ros.ros.dds` prints its path.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

PROFILE_VARS = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
SHM_SEGMENT_BYTES = 32 * 1024 * 1024
SOCKET_BUFFER_BYTES = 4 * 1024 * 1024

PROFILE_XML = f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- sof_ros: large shared-memory segment so best-effort camera frames are not dropped (sof_ros/ros/dds.py) -->
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
      <receiveBufferSize>{SOCKET_BUFFER_BYTES}</receiveBufferSize>
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


def profile_path() -> Path:
    """The profile written to the temp directory (content-addressed, so concurrent writers agree)."""
    digest = hashlib.sha1(PROFILE_XML.encode()).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"sof_ros_fastdds_{digest}.xml"
    if not path.is_file() or path.read_text() != PROFILE_XML:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(PROFILE_XML)
        os.replace(tmp, path)
    return path


def uses_fastdds(env=None) -> bool:
    rmw = (os.environ if env is None else env).get("RMW_IMPLEMENTATION", "")
    return rmw in ("", "rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp")


def environment(env=None) -> dict[str, str]:
    """Variables to add to `env` (default os.environ): the profile, unless one is set or the RMW is
    not Fast DDS."""
    env = os.environ if env is None else env
    if not uses_fastdds(env) or any(env.get(v) for v in PROFILE_VARS):
        return {}
    try:
        return {"FASTDDS_DEFAULT_PROFILES_FILE": str(profile_path())}
    except OSError as exc:  # e.g. a read-only temp directory: run with Fast DDS's defaults
        import sys

        print(f"sof_ros: cannot write the Fast DDS profile ({exc}); large camera frames may be dropped",
              file=sys.stderr)
        return {}


def configure(env=None) -> dict[str, str]:
    """Apply `environment()` to `env` (default os.environ) before rclpy.init; returns what was set."""
    env = os.environ if env is None else env
    extra = environment(env)
    env.update(extra)
    return extra


if __name__ == "__main__":
    print(profile_path())
