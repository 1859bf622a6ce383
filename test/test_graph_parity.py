"""sof-bench graph's bookkeeping: episodes cut off by the wall-clock limit are not counted, and the
episode-by-episode comparison names the episodes that differ."""
from __future__ import annotations

from sof_ros.bench.graph_parity import agreement, markdown, rate_row


def test_rates_count_complete_episodes_and_agreement_names_the_differences():
    in_process = {"button-press": {1000: {"success": True}, 1001: {"success": False}},
                  "hammer": {1000: {"success": False}, 1001: {"success": True}}}
    graph = {"button-press": {1000: {"success": True, "complete": True}, 1001: {"success": True, "complete": True}},
             "hammer": {1000: {"success": False, "complete": False}, 1001: {"success": False, "complete": True}}}
    row = rate_row(graph)
    assert (row["successes"], row["episodes"], row["incomplete"]) == (2, 3, 1)
    assert row["per_task"] == {"button-press": 1.0, "hammer": 0.0}
    assert row["ci95"][0] < row["average"] < row["ci95"][1]
    ag = agreement(in_process, graph)
    assert (ag["both"], ag["neither"], ag["only_in_process"], ag["only_graph"]) == (1, 0, 1, 1)
    assert ag["differ"] == ["button-press/1001", "hammer/1001"]
    result = {"command": "c", "commit": "x", "machine": "m", "checkpoint": "ck", "row": "sof_learning_free",
              "protocol": {"tasks": ["button-press", "hammer"], "cameras": ["corner"], "seeds": [1000, 1001],
                           "max_steps": 500, "graph_rate_hz": 30.0},
              "variants": {"in_process": {"what": "a", **rate_row(in_process)}, "graph": {"what": "b", **row}},
              "agreement": {"graph": ag}}
    md = markdown(result)
    assert "1 cut off by --seconds, not counted" in md and "only graph 1" in md and "| hammer | 0.50 | 0.00 |" in md


def test_a_graph_episode_record_says_whether_it_ran_to_its_end(tmp_path, monkeypatch):
    """graph_episode reads sof-bringup's summary: an episode the wall-clock limit cut off before
    success or max_steps is marked incomplete (not counted), and every record has its wall time."""
    import json

    from sof_ros.bench import graph_parity
    from sof_ros.ros import bringup

    summaries = iter([{"success": False, "sim_steps": 500}, {"success": False, "sim_steps": 120},
                      {"success": True, "sim_steps": 40}])

    class Done:
        returncode = 0

        def __init__(self, cmd, **kwargs):
            assert "--until-done" in cmd and kwargs["env"]["ROS_HOME"].startswith(str(tmp_path))
            summary = cmd[cmd.index("--summary") + 1]
            with open(summary, "w") as f:
                f.write(json.dumps(next(summaries)))

        def communicate(self, timeout=None):
            return "", ""

    monkeypatch.setattr(bringup, "node_popen", Done)
    recs = [graph_parity.graph_episode("ck", "sof_learning_free", "button-press", 1000 + i, 500, 30.0, 60.0,
                                       tmp_path / f"{i}.json", []) for i in range(3)]
    assert [r["complete"] for r in recs] == [True, False, True] and [r["success"] for r in recs] == [False, False, True]
    assert all(isinstance(r["wall_s"], float) for r in recs)
    assert json.loads((tmp_path / "0.json").read_text()) == recs[0]
