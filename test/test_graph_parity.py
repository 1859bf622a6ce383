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
