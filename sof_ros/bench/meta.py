"""Provenance stamped into every results file: the command, the commit and the machine."""
from __future__ import annotations

import os
import platform
import shlex
import string
import subprocess
import sys


def git_commit() -> str:
    """HEAD (with -dirty for uncommitted changes), or what SOF_ROS_COMMIT says: a copy of the tree on
    another machine (a GPU box, a container image) may carry no .git or a stale one, so the run that
    copied it names the commit, and the stamp says it was told."""
    told = os.environ.get("SOF_ROS_COMMIT", "").strip()
    if told:
        return f"{told} (from SOF_ROS_COMMIT)"
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                                cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def short_commit(commit: str) -> str:
    """12 hex digits, keeping what follows the hash (-dirty, "(from SOF_ROS_COMMIT)")."""
    if len(commit) >= 40 and all(c in string.hexdigits for c in commit[:40]):
        return commit[:12] + commit[40:]
    return commit


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


def command_line() -> str:
    """The command as a user types it: `python -m sof_ros.bench.cli transfer ...` is recorded as
    `sof-bench transfer ...` (the console script of that module), not as `cli.py transfer ...`."""
    prog = os.path.basename(sys.argv[0])
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:
        from importlib.metadata import entry_points

        prog = next((ep.name for ep in entry_points(group="console_scripts")
                     if ep.value.split(":")[0] == spec.name and ep.name.startswith("sof-")), prog)
    return " ".join(shlex.quote(a) for a in [prog] + sys.argv[1:])


def markdown_header(title: str, result: dict) -> list[str]:
    """The title and the command / commit / machine lines every results markdown opens with, so
    the benchmarks state their provenance in one format."""
    return [f"# {title}", "", f"- command: `{result['command']}`", f"- commit: `{result['commit']}`",
            f"- machine: {result['machine']}"]
