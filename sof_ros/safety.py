"""Safety filter between the learned policy and the robot (pure NumPy, no ROS).

Every command that leaves `flow2action_node` (and every pose target) passes through
`SafetyFilter`. Each decision returns `(SafeCommand, reason)`: the command that may be sent and a
one-line reason a node logs, so an operator can always see *why* the arm slowed down or stopped.

Rules, in the order they are applied:
1. e-stop latched            -> zero twist, until `clear_estop()` is called explicitly; with an
   `EstopStore` the latch outlives the process (a restarted node starts latched);
2. malformed / NaN / inf      -> zero twist (the command is rejected, never "repaired");
3. watchdog: any monitored input (frame, plan, command, end-effector pose) older than its
   timeout, or never received -> zero twist;
4. speed: linear / angular speed clamped to the robot's limits (direction kept);
5. workspace: the motion over one control period (or a position target) is clamped to the
   workspace box; if the end effector is outside the box only motion back towards it passes.
   Without a fresh end-effector position the box cannot be enforced -> zero twist.

The gripper command (MetaWorld convention: -1 open .. +1 close) is clipped to [-1, 1]; a
non-finite gripper value rejects the whole command.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

# Inputs the watchdog knows about. A node monitors the subset it relies on.
WATCHDOG_SOURCES = ("frame", "plan", "command", "pose")


@dataclass
class RobotLimits:
    """Hard limits of one robot, in its base frame. Values come from `sof_ros.ros.params` profiles,
    overridden by the `robot.*` parameters of config/<robot>.yaml."""

    workspace_min: tuple[float, float, float] = (-0.5, 0.4, 0.05)  # metres, base frame
    workspace_max: tuple[float, float, float] = (0.5, 1.0, 0.5)
    max_linear_speed: float = 0.25  # m/s, norm of the linear velocity
    max_angular_speed: float = 0.5  # rad/s, norm of the angular velocity

    def validate(self) -> None:
        lo, hi = np.asarray(self.workspace_min, float), np.asarray(self.workspace_max, float)
        if lo.shape != (3,) or hi.shape != (3,) or not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise ValueError(f"workspace box must be two finite 3-vectors, got {self.workspace_min}, {self.workspace_max}")
        if np.any(lo >= hi):
            raise ValueError(f"workspace_min {tuple(lo)} must be below workspace_max {tuple(hi)} on every axis")
        for name in ("max_linear_speed", "max_angular_speed"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v}")


@dataclass
class WatchdogTimeouts:
    """Seconds after which an input counts as stale. 0 disables that check."""

    frame: float = 0.5
    plan: float = 2.0
    command: float = 0.5
    pose: float = 0.5

    def get(self, source: str) -> float:
        return float(getattr(self, source))


@dataclass
class SafeCommand:
    """What may be sent to the robot: an end-effector twist in the base frame, an optional gripper
    command and, for pose-target mode, an optional position target."""

    linear: np.ndarray = field(default_factory=lambda: np.zeros(3))  # m/s
    angular: np.ndarray = field(default_factory=lambda: np.zeros(3))  # rad/s
    gripper: float | None = None  # None: leave the gripper as it is
    target: np.ndarray | None = None  # (3,) metres, base frame

    @property
    def is_zero(self) -> bool:
        return not (np.any(self.linear) or np.any(self.angular)) and self.target is None

    @staticmethod
    def stop() -> "SafeCommand":
        return SafeCommand()


OK = "ok"


def _vec(x, n: int = 3) -> np.ndarray | None:
    """A finite float vector of length n, or None if `x` is malformed."""
    try:
        arr = np.asarray(x, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return None
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        return None
    return arr


class SafetyFilter:
    """Clamp / reject / watchdog / e-stop. Not thread-safe; call it from one executor thread."""

    def __init__(self, limits: RobotLimits, timeouts: WatchdogTimeouts | None = None,
                 monitored: tuple[str, ...] = ("frame", "plan", "pose"),
                 clock: Callable[[], float] = time.monotonic):
        limits.validate()
        for s in monitored:
            if s not in WATCHDOG_SOURCES:
                raise ValueError(f"unknown watchdog source '{s}'; choose from {WATCHDOG_SOURCES}")
        self.limits = limits
        self.timeouts = timeouts or WatchdogTimeouts()
        self.monitored = tuple(monitored)
        self.clock = clock
        self._lo = np.asarray(limits.workspace_min, dtype=np.float64)
        self._hi = np.asarray(limits.workspace_max, dtype=np.float64)
        self._last: dict[str, float] = {}
        self._estop_reason: str | None = None

    # --- e-stop -----------------------------------------------------------------------------
    def estop(self, reason: str = "e-stop requested") -> tuple[SafeCommand, str]:
        """Latch the e-stop. Only `clear_estop()` releases it; a later estop keeps the first reason."""
        if self._estop_reason is None:
            self._estop_reason = reason
        return SafeCommand.stop(), f"e-stop latched: {self._estop_reason}"

    def clear_estop(self) -> str:
        was = self._estop_reason
        self._estop_reason = None
        # Inputs seen before the stop must not count as fresh: motion resumes only on new data.
        self._last.clear()
        return f"e-stop cleared (was: {was})" if was else "e-stop was not latched"

    @property
    def estopped(self) -> bool:
        return self._estop_reason is not None

    @property
    def estop_reason(self) -> str | None:
        return self._estop_reason

    # --- watchdog ---------------------------------------------------------------------------
    def heartbeat(self, source: str, t: float | None = None) -> None:
        """Record that `source` ('frame', 'plan', 'command', 'pose') was received at time t."""
        if source not in WATCHDOG_SOURCES:
            raise ValueError(f"unknown watchdog source '{source}'; choose from {WATCHDOG_SOURCES}")
        self._last[source] = self.clock() if t is None else float(t)

    def age(self, source: str, now: float | None = None) -> float:
        now = self.clock() if now is None else now
        last = self._last.get(source)
        return math.inf if last is None else now - last

    def watchdog(self, now: float | None = None, sources: tuple[str, ...] | None = None) -> tuple[bool, str]:
        """(fresh, reason): False with the first stale input's name and age if any is stale."""
        now = self.clock() if now is None else now
        for s in self.monitored if sources is None else sources:
            timeout = self.timeouts.get(s)
            if timeout <= 0:
                continue
            age = self.age(s, now)
            if age > timeout:
                if math.isinf(age):
                    return False, f"stale {s}: none received yet"
                return False, f"stale {s}: age {age:.3f} s > timeout {timeout:.3f} s"
        return True, OK

    def tick(self, now: float | None = None) -> tuple[SafeCommand | None, str]:
        """For the watchdog timer: (zero command, reason) when the robot must be stopped, else
        (None, 'ok') -- the last command issued is still valid. The 'command' source is checked too,
        so a policy that stops producing commands also stops the robot."""
        if self.estopped:
            return SafeCommand.stop(), f"e-stop latched: {self._estop_reason}"
        sources = tuple(dict.fromkeys(self.monitored + ("command",)))
        fresh, reason = self.watchdog(now, sources)
        if not fresh:
            return SafeCommand.stop(), reason
        return None, OK

    # --- commands ---------------------------------------------------------------------------
    def _pre(self, now: float | None) -> str | None:
        if self.estopped:
            return f"e-stop latched: {self._estop_reason}"
        fresh, reason = self.watchdog(now)
        return None if fresh else reason

    def filter_twist(self, linear, angular=None, gripper: float | None = None, ee_pos=None,
                     dt: float = 0.1, now: float | None = None) -> tuple[SafeCommand, str]:
        """Filter an end-effector twist (base frame, m/s and rad/s) applied for `dt` seconds."""
        stop = self._pre(now)
        if stop:
            return SafeCommand.stop(), stop
        lin = _vec(linear)
        if lin is None:
            return SafeCommand.stop(), f"rejected: linear velocity must be 3 finite numbers, got {linear!r}"
        ang = np.zeros(3) if angular is None else _vec(angular)
        if ang is None:
            return SafeCommand.stop(), f"rejected: angular velocity must be 3 finite numbers, got {angular!r}"
        grip, why = self._gripper(gripper)
        if why:
            return SafeCommand.stop(), why
        if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
            return SafeCommand.stop(), f"rejected: control period dt must be > 0, got {dt!r}"
        notes: list[str] = []
        lin, note = self._clamp_norm(lin, self.limits.max_linear_speed, "linear speed", "m/s")
        notes += [note] if note else []
        ang, note = self._clamp_norm(ang, self.limits.max_angular_speed, "angular speed", "rad/s")
        notes += [note] if note else []
        if np.any(lin):
            pos = _vec(ee_pos) if ee_pos is not None else None
            if pos is None:
                return SafeCommand.stop(), "rejected: no valid end-effector position, workspace cannot be enforced"
            lin, note = self._clamp_motion(pos, lin, dt)
            notes += [note] if note else []
        cmd = SafeCommand(linear=lin, angular=ang, gripper=grip)
        return cmd, ("clamped: " + "; ".join(notes)) if notes else OK

    def filter_target(self, target, ee_pos=None, gripper: float | None = None,
                      now: float | None = None) -> tuple[SafeCommand, str]:
        """Filter an end-effector position target (base frame, metres): clamp it into the box."""
        stop = self._pre(now)
        if stop:
            return SafeCommand.stop(), stop
        tgt = _vec(target)
        if tgt is None:
            return SafeCommand.stop(), f"rejected: target must be 3 finite numbers, got {target!r}"
        grip, why = self._gripper(gripper)
        if why:
            return SafeCommand.stop(), why
        if ee_pos is not None and _vec(ee_pos) is None:
            return SafeCommand.stop(), f"rejected: end-effector position must be 3 finite numbers, got {ee_pos!r}"
        clamped = np.clip(tgt, self._lo, self._hi)
        cmd = SafeCommand(gripper=grip, target=clamped)
        if np.any(clamped != tgt):
            return cmd, f"clamped: target {_fmt(tgt)} -> {_fmt(clamped)} (workspace box)"
        return cmd, OK

    # --- helpers ----------------------------------------------------------------------------
    @staticmethod
    def _gripper(gripper) -> tuple[float | None, str | None]:
        if gripper is None:
            return None, None
        try:
            g = float(gripper)
        except (TypeError, ValueError):
            return None, f"rejected: gripper command must be a number, got {gripper!r}"
        if not math.isfinite(g):
            return None, f"rejected: gripper command must be finite, got {g}"
        return float(np.clip(g, -1.0, 1.0)), None

    @staticmethod
    def _clamp_norm(v: np.ndarray, limit: float, what: str, unit: str) -> tuple[np.ndarray, str | None]:
        n = float(np.linalg.norm(v))
        if n <= limit:
            return v, None
        return (v * (limit / n) if n > 0 else v), f"{what} {n:.3f} {unit} > {limit:.3f} {unit}"

    def _clamp_motion(self, pos: np.ndarray, lin: np.ndarray, dt: float) -> tuple[np.ndarray, str | None]:
        nxt = pos + lin * dt
        out = lin.copy()
        notes = []
        for i, axis in enumerate("xyz"):
            lo, hi = self._lo[i], self._hi[i]
            if nxt[i] > hi and lin[i] > 0:
                out[i] = max(0.0, (hi - pos[i]) / dt)
                notes.append(f"{axis}<={hi:.3f}")
            elif nxt[i] < lo and lin[i] < 0:
                out[i] = min(0.0, (lo - pos[i]) / dt)
                notes.append(f"{axis}>={lo:.3f}")
        if not notes:
            return lin, None
        return out, "workspace " + ",".join(notes)


def _fmt(v: np.ndarray) -> str:
    return "(" + ", ".join(f"{x:.3f}" for x in v) + ")"


class EstopStore:
    """The e-stop latch on disk, so it outlives the process: a node that crashes and restarts while
    e-stopped starts e-stopped, whatever its e-stop topic holds by then (the publisher may be gone,
    or may have published false since -- neither clears the stop). Only an explicit clear does.

    One small JSON file, {"latched": bool, "reason": str, "time": float}, replaced atomically
    (write a temporary file, fsync it, rename it over the old one, fsync the directory): `save`
    returns only once the new state is on disk, so a stop that was acknowledged survives power loss.
    A file that cannot be read or parsed counts as latched (fail safe)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)

    def load(self) -> str | None:
        """The reason of the latched e-stop, or None when none is latched (or no file exists yet)."""
        try:
            with open(self.path, encoding="utf-8") as f:
                state = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            return f"e-stop state file {self.path} is unreadable ({type(exc).__name__}: {exc}); treating it as latched"
        if not isinstance(state, dict) or not isinstance(state.get("latched"), bool):
            return f"e-stop state file {self.path} has no boolean 'latched'; treating it as latched"
        return str(state.get("reason") or "e-stop") if state["latched"] else None

    def save(self, reason: str | None) -> None:
        """Latch (reason) or clear (None), durably; raises OSError when the state cannot be written."""
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        tmp = f"{self.path}.tmp{os.getpid()}"
        state = {"latched": reason is not None, "reason": reason or "", "time": time.time()}
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)  # the rename itself
        finally:
            os.close(fd)
