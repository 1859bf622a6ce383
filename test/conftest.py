"""Shared pytest fixtures.

ROS (sof_ros.ros) fixtures: every ROS test gets its own DDS domain id (random in 1..100, held with
a lock file for the test's duration, so concurrent test sessions on one machine never share one)
and localhost-only discovery.
"""
from __future__ import annotations

import fcntl
import os
import random
import tempfile
import threading
import time

import pytest

_rng = random.SystemRandom()


def unique_domain_id() -> tuple[int, object]:
    """(domain id, open lock file): a random id no other process on this machine holds."""
    ids = list(range(1, 101))
    _rng.shuffle(ids)
    for domain in ids:
        f = open(os.path.join(tempfile.gettempdir(), f"sof_ros_test_domain_{domain}.lock"), "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return domain, f
        except OSError:
            f.close()
    raise RuntimeError("all ROS domain ids 1..100 are held by other test sessions")


@pytest.fixture
def ros_env(monkeypatch):
    """Environment for ROS processes started by a test (subprocesses inherit it)."""
    domain, lock = unique_domain_id()
    from sof_ros.ros import dds

    # the same settings on every machine: sof_ros's defaults (localhost, its Fast DDS profile), not
    # whatever network mode, profile or discovery range the machine's environment has
    for key in (dds.NETWORK_VAR, *dds.PROFILE_VARS, *dds.DISCOVERY_VARS):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
    for key, value in dds.process_environment().items():  # what every sof_ros process uses
        monkeypatch.setenv(key, value)
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    try:
        yield domain
    finally:
        lock.close()  # releases the flock


@pytest.fixture
def fake_agent():
    """A Policy test double (test/ros_test_doubles.py): the node tests need no checkpoint."""
    from ros_test_doubles import FakeAgent

    return FakeAgent()


class _Spinner:
    """One node spun by its own single-threaded executor in its own thread -- as in its own process
    (`run_node` spins one node on a SingleThreadedExecutor), so taking one node away cannot stall
    the others."""

    def __init__(self, node, ctx, on_error):
        from rclpy.executors import SingleThreadedExecutor

        self.node = node
        self.executor = SingleThreadedExecutor(context=ctx)
        self.executor.add_node(node)
        self._on_error = on_error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, name=f"spin {node.get_name()}", daemon=True)
        self._thread.start()

    def _spin(self):
        try:
            while not self._stop.is_set():
                self.executor.spin_once(timeout_sec=0.05)
        except Exception as exc:  # a callback raised: wait_for turns it into a test failure at once
            import traceback

            traceback.print_exc()
            self._on_error(exc)

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=5.0)
        self.executor.shutdown(timeout_sec=5.0)


class RosHarness:
    """One rclpy context, a probe node to publish / collect messages, and the nodes under test;
    every node spins in its own thread (see _Spinner)."""

    def __init__(self, domain: int):
        import rclpy
        from rclpy.context import Context
        from rclpy.node import Node

        self.ctx = Context()
        rclpy.init(context=self.ctx, domain_id=domain)
        self.error = None
        self.probe = Node("probe", context=self.ctx)
        self._spinners = {self.probe: _Spinner(self.probe, self.ctx, self._failed)}
        self.nodes = []

    def _failed(self, exc):
        self.error = exc

    def add(self, node):
        self.nodes.append(node)
        self._spinners[node] = _Spinner(node, self.ctx, self._failed)
        return node

    def remove(self, node):
        """Stop spinning a node and destroy it, as if its process had died (its spin thread stops
        first: destroying a node whose callback is still running makes that callback raise)."""
        self._spinners.pop(node).stop()
        self.nodes.remove(node)
        node.close()
        node.destroy_node()

    def collect(self, msg_type, topic, qos):
        box = []
        self.probe.create_subscription(msg_type, topic, box.append, qos)
        return box

    def publisher(self, msg_type, topic, qos):
        return self.probe.create_publisher(msg_type, topic, qos)

    def wait_for(self, pred, timeout: float, period: float = 0.02) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.error is not None:
                raise AssertionError(f"the executor thread died: {self.error!r}") from self.error
            if pred():
                return True
            time.sleep(period)
        return bool(pred())

    def close(self):
        import rclpy

        for spinner in self._spinners.values():
            spinner.stop()
        for n in reversed(self.nodes):
            n.close()
            n.destroy_node()
        self.probe.destroy_node()
        rclpy.try_shutdown(context=self.ctx)


@pytest.fixture
def ros(ros_env):
    pytest.importorskip("rclpy")
    h = RosHarness(ros_env)
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def repo_root():
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
