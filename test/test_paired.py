"""sof-eval --paired: two rows compared on the episodes both ran, with the exact McNemar p-value."""
import json

import pytest

from sof_ros.errors import SofError
from sof_ros.eval import episode_successes, main, paired


def _write(work, row, results):
    for (task, camera, seed), success in results.items():
        f = work / "episodes" / row / task / f"{camera}.jsonl"
        f.parent.mkdir(parents=True, exist_ok=True)
        with f.open("a") as fh:
            fh.write(json.dumps({"seed": seed, "success": success, "steps": 10}) + "\n")


def test_paired_counts_discordant_episodes_and_gives_the_exact_mcnemar_p(tmp_path, capsys):
    a = {("door-open", "corner", s): s < 8 for s in range(10)}          # solves seeds 0-7
    b = {("door-open", "corner", s): s >= 2 for s in range(10)}         # solves seeds 2-9
    b[("door-open", "corner", 99)] = True                               # an episode A never ran: left out
    _write(tmp_path / "wa", "bc", a)
    _write(tmp_path / "wb", "sof", b)
    r = paired(episode_successes(tmp_path / "wa", "bc"), episode_successes(tmp_path / "wb", "sof"))
    assert (r["episodes"], r["successes_a"], r["successes_b"], r["only_a"], r["only_b"]) == (10, 8, 8, 2, 2)
    assert r["mcnemar_p"] == 1.0
    # 7 discordant pairs all one way: p = 2 / 2**7
    r = paired({("t", "c", s): False for s in range(7)}, {("t", "c", s): True for s in range(7)})
    assert r["mcnemar_p"] == pytest.approx(2 / 2 ** 7)
    main(["--paired", f"{tmp_path / 'wa'}:bc", f"{tmp_path / 'wb'}:sof"])
    assert "10 shared episodes" in capsys.readouterr().out


def test_paired_refuses_what_it_cannot_compare(tmp_path):
    _write(tmp_path / "w", "bc", {("t", "c", 0): True})
    with pytest.raises(SofError, match="no episodes of row 'sof'"):
        episode_successes(tmp_path / "w", "sof")
    with pytest.raises(SofError, match="share no episode"):
        paired({("t", "c", 0): True}, {("t", "c", 1): True})
    with pytest.raises(SystemExit):  # a malformed WORK:ROW is a one-line error, exit 2
        main(["--paired", str(tmp_path / "w"), f"{tmp_path / 'w'}:bc"])
