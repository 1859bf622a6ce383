"""Pool workers go when the process that started them goes (sof_ros.procs): a `kill` of
`sof-eval --workers 2` left its workers appending episodes that a restarted run appends too."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")

ROOT = Path(__file__).resolve().parents[1]

OWNER = textwrap.dedent("""
    import multiprocessing as mp, os, sys, time
    from concurrent.futures import ProcessPoolExecutor
    from pathlib import Path
    from sof_ros.procs import worker_dies_with

    def busy(out):  # a worker inside a long job when its owner is killed, as sof-eval's are
        Path(out, str(os.getpid())).touch()
        time.sleep(600)

    if __name__ == "__main__":
        init = dict(initializer=worker_dies_with, initargs=(os.getpid(),)) if sys.argv[1] == "guarded" else {}
        with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn"), **init) as pool:
            for _ in range(2):  # each worker is held by one job, so the second job goes to the other
                pool.submit(busy, sys.argv[2])
            time.sleep(600)
""")


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"  # a zombie has exited; only its reaper is missing


@pytest.mark.parametrize("guarded", [True, False])
def test_pool_workers_go_when_their_owner_is_killed(tmp_path, guarded):
    script = tmp_path / "owner.py"
    script.write_text(OWNER)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    pids = tmp_path / "pids"
    pids.mkdir()
    owner = subprocess.Popen([sys.executable, str(script), "guarded" if guarded else "plain", str(pids)], env=env)
    workers = []
    try:
        deadline = time.monotonic() + 60  # two spawned interpreters importing sof_ros on a loaded CPU
        while time.monotonic() < deadline and len(list(pids.iterdir())) < 2:
            time.sleep(0.1)
        workers = [int(p.name) for p in pids.iterdir()]
        assert len(workers) == 2 and all(_running(p) for p in workers), workers
        owner.send_signal(signal.SIGKILL)  # no cleanup at all: the worst case
        owner.wait(timeout=10)
        deadline = time.monotonic() + (15 if guarded else 3)  # guarded: dies within ms; unguarded: would stay
        while time.monotonic() < deadline and any(_running(p) for p in workers):
            time.sleep(0.1)
        left = [p for p in workers if _running(p)]
        if guarded:
            assert not left, f"workers {left} outlived their killed owner"
        else:
            assert left, "unguarded workers died too: this test would not see a regression"
    finally:
        if owner.poll() is None:
            owner.kill()
        for p in workers:
            if _running(p):
                os.kill(p, signal.SIGKILL)
