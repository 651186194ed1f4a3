"""The mesh's Prometheus rules and Grafana dashboard (issue 23): the rules pass `promtool
check rules` and their own `promtool test rules`, every alert is tested firing and not
firing, and they name only series the daemon serves; the dashboard is valid JSON whose
panels each have a datasource and queries that parse, reading only recorded series that the
rules record and raw series the daemon serves, with unique ids and no overlapping panels."""

from __future__ import annotations

import json
import re
from pathlib import Path

from promtool import check_rules, needs_promtool, run_rule_tests

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "packaging" / "prometheus" / "mcast-echo-mesh.rules.yml"
RULES_TEST = ROOT / "packaging" / "prometheus" / "mcast-echo-mesh.rules.test.yml"
DASHBOARD = ROOT / "packaging" / "grafana" / "mcast-echo-mesh.json"
COLLECTOR = ROOT / "src" / "mcast_echo" / "daemon" / "meshcollector.py"
ALERTS = {"McastEchoMeshDeaf", "McastEchoMeshPathDead", "McastEchoMeshPartition"}
RECORDED = re.compile(r"\bmcast_echo_mesh:[a-z0-9_:]+")
RAW = re.compile(r"\bmcast_echo_mesh_[a-z0-9_]*[a-z]\b")



def served_by_the_daemon() -> set[str]:
    return set(re.findall(r'"(mcast_echo_mesh_[a-z_]+)"', COLLECTOR.read_text()))


def recorded_by_the_rules() -> set[str]:
    return set(re.findall(r"^\s+- record: (\S+)$", RULES.read_text(), re.M))


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def exprs(board: dict) -> list[str]:
    return [t["expr"] for p in board["panels"] for t in p["targets"]]


@needs_promtool
def test_promtool_check_rules():
    done = check_rules(RULES)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 8 rules found" in done.stdout


@needs_promtool
def test_run_rule_tests():
    done = run_rule_tests(RULES_TEST)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_firing_and_a_not_firing_test():
    alerts = set(re.findall(r"^\s+- alert: (\w+)$", RULES.read_text(), re.M))
    tests = RULES_TEST.read_text()
    firing = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts:\n\s+- exp_labels", tests))
    not_firing = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts: \[\]", tests))
    assert alerts == firing == not_firing == ALERTS


def test_the_rules_name_only_series_the_daemon_serves():
    text = RULES.read_text()
    assert set(RAW.findall(text)) <= served_by_the_daemon()
    assert set(RECORDED.findall(text)) == recorded_by_the_rules()


def test_the_dashboard_has_the_structure_grafana_imports():
    board = dashboard()
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    assert board["uid"] and board["title"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in board["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["id"]
        assert panel["targets"], panel["id"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"] == panel["datasource"]


def test_no_two_panels_overlap_on_the_24_column_grid():
    cells: dict[tuple[int, int], int] = {}
    for panel in dashboard()["panels"]:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, panel["id"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, (panel["id"], cells.get((x, y)))
                cells[(x, y)] = panel["id"]


def test_the_matrix_panels_are_prober_by_responder_from_the_recorded_ratios():
    matrices = {}
    for panel in dashboard()["panels"]:
        for step in panel.get("transformations", []):
            if step["id"] == "groupingToMatrix":
                matrices[panel["targets"][0]["expr"]] = step["options"]
                assert panel["targets"][0]["format"] == "table" and panel["targets"][0]["instant"]
                cell = panel["fieldConfig"]["defaults"]["custom"]["cellOptions"]
                assert cell["type"] == "color-background"  # a heat-map: colour by ratio
    assert set(matrices) == {"mcast_echo_mesh:forward_ratio:rate1m",
                             "mcast_echo_mesh:reverse_ratio:rate1m"}
    for options in matrices.values():
        assert (options["rowField"], options["columnField"], options["valueField"]) == \
            ("prober", "responder", "Value")


def test_the_dashboard_reads_only_recorded_series_that_exist_and_served_ones():
    text = " ".join(exprs(dashboard()))
    recorded = set(RECORDED.findall(text))
    assert recorded and recorded <= recorded_by_the_rules(), recorded - recorded_by_the_rules()
    assert set(RAW.findall(text)) <= served_by_the_daemon()


@needs_promtool
def test_every_dashboard_query_parses(tmp_path):
    """promtool parses each query as a recording rule's expression."""
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": expr}
        for i, expr in enumerate(exprs(dashboard()))]}]}
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    done = check_rules(path)
    assert done.returncode == 0, done.stdout + done.stderr
