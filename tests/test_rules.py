"""Issue 16 #3: the Prometheus alert rules are tested, not only linted: `promtool check rules` and `promtool
test rules` (deploy/grafana/alert-rules.test.yaml, one group per rule), and a real Prometheus on loopback
scraping a running daemon knows every metric the rules use. promtool and prometheus come from Debian's
`prometheus` package (.ci/run installs it); without them the tests are skipped locally and fail in CI."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import MODEL_VIEW, DaemonProcess, Setup, debian_tool, free_port, wait_for_log, wait_until

GRAFANA = Path(__file__).resolve().parent.parent / "deploy" / "grafana"
RULES = GRAFANA / "alert-rules.yaml"
TESTS = GRAFANA / "alert-rules.test.yaml"


def _tool(name: str) -> str:
    return debian_tool(name, "prometheus")


def _rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_promtool_checks_the_rules_and_runs_one_test_group_per_rule() -> None:
    promtool = _tool("promtool")
    check = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in check.stdout
    tested = subprocess.run([promtool, "test", "rules", str(TESTS)], capture_output=True, text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    groups = yaml.safe_load(TESTS.read_text())["tests"]
    names = [{t["alertname"] for t in g["alert_rule_test"]} for g in groups]
    assert all(len(n) == 1 for n in names)  # a group tests one rule
    assert sorted(n.pop() for n in names) == sorted(r["alert"] for r in _rules())
    # Each group both expects its rule to fire and, where a test can say so, not to fire.
    assert all(any(t["exp_alerts"] for t in g["alert_rule_test"]) for g in groups)


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(monitor_[a-z_]+)\b", expr))


@pytest.mark.integration
def test_a_real_prometheus_scraping_the_daemon_knows_every_metric_of_the_rules(
        kafka_bootstrap: str, redis_url: str, unique: str, tmp_path: Path, daemons: list[DaemonProcess]) -> None:
    prometheus = _tool("prometheus")
    setup = Setup(unique, kafka_bootstrap, redis_url, tmp_path)
    setup.create_topics()
    config = setup.write_config(MODEL_VIEW)
    d = DaemonProcess(config, tmp_path / "daemon.log").start()
    daemons.append(d)
    wait_for_log(d, "partitions.assigned", 60)
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "mm", "static_configs": [{"targets": [f"127.0.0.1:{setup.http_port}"]}]}],
    }))
    proc = subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("wb"))
    try:
        def api(path: str) -> Any:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
                    return json.loads(resp.read())["data"]
            except OSError:
                return None

        wait_until(lambda: (t := api("/api/v1/targets")) and any(a["health"] == "up" for a in t["activeTargets"]),
                   60, "Prometheus to scrape the daemon")
        # Every rule loaded and evaluated without error against the scraped data.
        loaded = wait_until(lambda: (g := api("/api/v1/rules")) and g["groups"] and all(
            r["health"] == "ok" for grp in g["groups"] for r in grp["rules"]) and g, 30, "the rules evaluated")
        assert {r["name"] for grp in loaded["groups"] for r in grp["rules"]} == {r["alert"] for r in _rules()}
        wanted = {n for r in _rules() for n in _metric_names(r["expr"])}
        known = wait_until(lambda: (m := api("/api/v1/targets/metadata?match_target=%7Bjob%3D%22mm%22%7D"))
                           and wanted <= {x["metric"] for x in m} and m, 30, "the metadata of every metric")
        assert wanted <= {x["metric"] for x in known}
        # The unlabelled health gauges are series already: the readiness rule evaluates against real data.
        ready = api("/api/v1/query?query=monitor_ready")
        assert ready and ready["result"] and all(r["value"][1] == "1" for r in ready["result"])
    finally:
        proc.terminate()
        proc.wait(30)
