"""Recorder node: writes the run's main topics to an MCAP file (ROS 2 profile, CDR messages) that
Foxglove, `ros2 bag` (rosbag2 storage plugin mcap) and mcap-ros2-support read.

Topics are subscribed as raw CDR bytes as soon as a publisher for them appears (types come from the
graph), with the publishers' reliability / durability, so nothing is decoded or re-encoded.
Schemas are the packages' .msg definitions (found under AMENT_PREFIX_PATH or the Python prefix's
share/), or, if those files are not installed, generated from the message classes.
"""
from __future__ import annotations

import importlib
import os
import re
import sys
import threading
from pathlib import Path

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from sof_ros.errors import SofError
from sof_ros.ros.base import SofNode, run_node
from sof_ros.ros.params import RecorderNodeParams

_SEP = "=" * 80 + "\n"
_PRIMS = {"boolean": "bool", "octet": "byte", "float": "float32", "double": "float64",
          "uint8": "uint8", "int8": "int8", "uint16": "uint16", "int16": "int16", "uint32": "uint32",
          "int32": "int32", "uint64": "uint64", "int64": "int64", "string": "string", "wstring": "wstring",
          "char": "char"}


def msg_class(type_name: str):
    """'sensor_msgs/msg/Image' -> the Python class."""
    pkg, _, name = type_name.partition("/msg/")
    if not name:
        raise SofError(f"not a message type name: '{type_name}'")
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


def _share_dirs() -> list[Path]:
    dirs = [Path(p) / "share" for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    return dirs + [Path(sys.prefix) / "share"]


def _base(t: str) -> str:
    """Element type of an introspection type string ('sequence<pkg/T, 3>' -> 'pkg/T')."""
    t = re.sub(r"^sequence<(.+?)(,\s*\d+)?>$", r"\1", t)
    return re.sub(r"\[\d*\]$", "", t)


def _ros_type(t: str) -> str:
    """Introspection type string -> .msg field type."""
    m = re.match(r"^sequence<(.+?)(?:,\s*(\d+))?>$", t)
    if m:
        return _ros_type(m.group(1)) + (f"[<={m.group(2)}]" if m.group(2) else "[]")
    m = re.match(r"^(.+?)\[(\d+)\]$", t)
    if m:
        return _ros_type(m.group(1)) + f"[{m.group(2)}]"
    m = re.match(r"^(w?string)<(\d+)>$", t)
    if m:
        return f"{m.group(1)}<={m.group(2)}"
    return _PRIMS.get(t, t)


def _own_text(pkg: str, name: str, cls) -> str:
    for d in _share_dirs():
        f = d / pkg / "msg" / f"{name}.msg"
        if f.is_file():
            return f.read_text()
    return "".join(f"{_ros_type(t)} {n}\n" for n, t in cls.get_fields_and_field_types().items())


def msgdef_text(cls) -> str:
    """Full ROS 2 message definition (ros2msg schema encoding): the type's own definition followed by
    each nested type as 'MSG: pkg/Type' blocks."""
    pkg = cls.__module__.split(".")[0]
    parts = [_own_text(pkg, cls.__name__, cls).rstrip("\n") + "\n"]
    seen: set[str] = set()
    todo = [cls]
    while todo:
        c = todo.pop(0)
        for t in c.get_fields_and_field_types().values():
            base = _base(t)
            if "/" not in base or base in seen:
                continue
            seen.add(base)
            dpkg, dname = base.split("/")
            dcls = getattr(importlib.import_module(f"{dpkg}.msg"), dname)
            parts.append(_SEP + f"MSG: {dpkg}/{dname}\n" + _own_text(dpkg, dname, dcls).rstrip("\n") + "\n")
            todo.append(dcls)
    return "".join(parts)


class McapRecorder:
    """Thread-safe raw-CDR MCAP writer."""

    def __init__(self, path: str | Path):
        from mcap.writer import CompressionType, Writer

        path = Path(path)
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = open(path, "wb")
        try:
            import zstandard  # noqa: F401

            comp = CompressionType.ZSTD
        except ImportError:
            comp = CompressionType.NONE
        self._w = Writer(self._file, compression=comp)
        self._w.start(profile="ros2", library="sof_ros recorder")
        self._schemas: dict[str, int] = {}
        self._channels: dict[str, int] = {}
        self._seq: dict[str, int] = {}
        self._lock = threading.Lock()
        self.count = 0
        self._closed = False

    def add_topic(self, topic: str, type_name: str, cls) -> None:
        with self._lock:
            if type_name not in self._schemas:
                self._schemas[type_name] = self._w.register_schema(type_name, "ros2msg", msgdef_text(cls).encode())
            self._channels[topic] = self._w.register_channel(topic, "cdr", self._schemas[type_name])
            self._seq[topic] = 0

    def write(self, topic: str, data: bytes, log_time_ns: int) -> None:
        with self._lock:
            if self._closed:
                return
            self._seq[topic] += 1
            self._w.add_message(self._channels[topic], log_time_ns, bytes(data), log_time_ns, self._seq[topic])
            self.count += 1

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._w.finish()
            self._file.close()


class RecorderNode(SofNode):
    PARAMS = RecorderNodeParams
    DEFAULT_NAME = "sof_recorder"

    def __init__(self, node_name: str | None = None, **kwargs):
        super().__init__(node_name, **kwargs)
        p: RecorderNodeParams = self.p
        self.rec = McapRecorder(p.path)
        self._subs: dict[str, object] = {}
        try:  # stopped while starting (Ctrl-C, or a graph that ended first): still a readable, empty file
            self.get_logger().info(f"recording {len(p.topics)} topics to {p.path}")
            self._discover()
            self.create_timer(p.discovery_period_s, self._discover)
        except BaseException:
            self.rec.close()
            raise

    def _discover(self) -> None:
        wanted = [t for t in self.p.topics if t not in self._subs]
        if not wanted:
            return
        types = dict(self.get_topic_names_and_types())
        for topic in wanted:
            if topic not in types or not types[topic]:
                continue
            type_name = types[topic][0]
            try:
                cls = msg_class(type_name)
            except (ImportError, AttributeError, SofError) as exc:
                self.log_reason("record", f"cannot record {topic} ({type_name}): {exc}", "warning")
                self._subs[topic] = None
                continue
            pubs = self.get_publishers_info_by_topic(topic)
            if not pubs:
                continue
            reliable = all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in pubs)
            latched = all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in pubs)
            qos = QoSProfile(
                reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
                history=HistoryPolicy.KEEP_LAST, depth=100 if reliable else 10)
            self.rec.add_topic(topic, type_name, cls)
            self._subs[topic] = self.create_subscription(
                cls, topic, lambda data, t=topic: self.rec.write(t, data, self.now_ns()), qos, raw=True)
            self.get_logger().info(f"recording {topic} [{type_name}]")

    def close(self) -> None:
        self.rec.close()
        # the ROS context may already be shut down here (Ctrl-C), so not through the ROS logger
        print(f"[sof_recorder] wrote {self.rec.count} messages to {self.rec.path}", file=sys.stderr, flush=True)


def main(args: list[str] | None = None) -> int:
    return run_node(RecorderNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
