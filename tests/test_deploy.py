"""Deployment files: Kubernetes manifests valid against the schemas, YAML lint-clean, the Dockerfile
hadolint-clean, and the dashboard and alert rules only use metrics the daemon exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from monitor.cli.main import _parser
from monitor.ops.metrics import Metrics

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def _exported() -> set[str]:
    names = set()
    for family in Metrics().registry.collect():
        names.add(family.name)
        names.update(s.name for s in family.samples)
    for family in list(Metrics().registry.collect()):
        if family.type == "histogram":
            names.update({f"{family.name}_bucket", f"{family.name}_count", f"{family.name}_sum"})
        if family.type == "counter":
            names.add(f"{family.name}_total")
    return names


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(monitor_[a-z_]+)", expr))


@pytest.mark.parametrize("path", sorted((DEPLOY / "kubernetes").glob("*.yaml")), ids=lambda p: p.name)
def test_kubernetes_manifests_are_valid(path: Path) -> None:
    import kubernetes_validate

    for doc in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(doc, "1.30", strict=True)


def test_yaml_files_lint_clean() -> None:
    files = [str(p) for p in DEPLOY.rglob("*.y*ml")]
    config = "{extends: relaxed, rules: {line-length: {max: 120}}}"
    out = subprocess.run([sys.executable, "-m", "yamllint", "-d", config, "-f", "parsable", *files],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    out = subprocess.run([hadolint, str(DEPLOY / "Dockerfile")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dashboard_uses_exported_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboard.json").read_text())
    exported = _exported()
    used = {name for panel in dashboard["panels"] for t in panel["targets"] for name in _metric_names(t["expr"])}
    assert used and used <= exported, used - exported
    assert {"monitor_events_total", "monitor_consumer_lag", "monitor_rejects_total", "monitor_alerts_total",
            "monitor_drift_statistic"} <= used


def test_alert_rules_use_exported_metrics() -> None:
    rules = yaml.safe_load((DEPLOY / "grafana" / "alert-rules.yaml").read_text())
    exported = _exported()
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = {n for e in exprs for n in _metric_names(e)}
    assert used <= exported, used - exported
    assert {r["alert"] for g in rules["groups"] for r in g["rules"]} >= {
        "ModelMonitorNotReady", "ModelMonitorLagGrowing", "ModelMonitorDeadLetterRate"}


def test_compose_commands_are_valid_cli_calls() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    for name in ("topics", "simulator"):
        _parser().parse_args(compose["services"][name]["command"])  # raises SystemExit if not
    assert compose["services"]["redis"]["command"][1:3] == ["--appendonly", "yes"]
