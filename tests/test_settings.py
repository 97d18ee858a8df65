"""Configuration: YAML, environment overrides, secrets from files, librdkafka pass-through, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from monitor.errors import ConfigError
from monitor.settings import load_settings

BASE = {
    "kafka": {"bootstrap.servers": "127.0.0.1:9092", "security.protocol": "SASL_SSL", "socket.timeout.ms": 5000},
    "models": [{"name": "m", "features": {"topic": "m.f", "schema": "f.avsc"}}],
}


def _write(tmp_path: Path, cfg: dict[str, object]) -> Path:
    path = tmp_path / "monitor.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_defaults_and_relative_schema_path(tmp_path: Path) -> None:
    """Unset values take documented defaults; schema paths resolve against the config's folder."""
    s = load_settings(_write(tmp_path, BASE), environ={})
    assert s.http.host == "127.0.0.1" and s.group_id == "model-monitor"
    assert s.models[0].features.schema_path == tmp_path / "f.avsc"


def test_environment_overrides(tmp_path: Path) -> None:
    """MONITOR_* variables win over the file, including librdkafka keys and nested HTTP settings."""
    env = {
        "MONITOR_GROUP_ID": "g2",
        "MONITOR_HTTP_PORT": "9999",
        "MONITOR_KAFKA__BOOTSTRAP_SERVERS": "broker:9093",
        "MONITOR_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
    }
    s = load_settings(_write(tmp_path, BASE), environ=env)
    assert s.group_id == "g2" and s.http.port == 9999
    conf = s.consumer_config()
    assert conf["bootstrap.servers"] == "broker:9093"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["socket.timeout.ms"] == "5000"  # YAML ints become librdkafka strings


def test_secret_from_file(tmp_path: Path) -> None:
    """MONITOR_..._FILE reads a secret from a file (as mounted Kubernetes secrets are)."""
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    s = load_settings(_write(tmp_path, BASE), environ={"MONITOR_KAFKA__SASL_PASSWORD_FILE": str(secret)})
    assert s.producer_config()["sasl.password"] == "s3cret"


def test_consumer_and_producer_guarantees(tmp_path: Path) -> None:
    """Offsets are ours (no auto commit), reads are read_committed, the producer is idempotent with acks=all."""
    s = load_settings(_write(tmp_path, BASE), environ={})
    c, p = s.consumer_config(), s.producer_config()
    assert c["enable.auto.commit"] is False and c["isolation.level"] == "read_committed"
    assert c["partition.assignment.strategy"] == "cooperative-sticky"
    assert p["enable.idempotence"] is True and p["acks"] == "all"
    assert "group.id" not in p


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"models": []}, "models"),
        ({**BASE, "http": {"port": 70000}}, "port"),
        ({**BASE, "unknown_key": 1}, "unknown_key"),
        # Issue 11 #8: names that go into Redis keys cannot break the cluster hash tag.
        ({**BASE, "group_id": "team}a"}, "group_id"),
        ({**BASE, "group_id": "a:b"}, "group_id"),
        ({**BASE, "alerts_topic": "alerts{x}"}, "alerts_topic"),
        ({"models": [{"name": "m", "features": {"topic": "in put", "schema": "x"}}]}, "topic"),
        ({"models": [{"name": "m", "features": {"topic": "a"}}]}, "schema"),
        ({"models": [{"name": "m", "features": {"topic": "a", "schema": "x"}},
                     {"name": "n", "features": {"topic": "a", "schema": "x"}}]}, "used twice"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, cfg: dict[str, object], message: str) -> None:
    """Invalid settings raise ConfigError naming what is wrong."""
    with pytest.raises(ConfigError, match=message):
        load_settings(_write(tmp_path, cfg), environ={})


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    """A missing file or broken YAML is a ConfigError, not a traceback."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "nope.yaml", environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad, environ={})


def test_feature_overrides(tmp_path: Path) -> None:
    """Per-feature overrides merge into the defaults."""
    cfg = {**BASE, "models": [{**BASE["models"][0], "overrides": {"age": {"max_nan_rate": 0.2,  # type: ignore[dict-item]
                                                                          "adwin": {"delta": 0.01}}}}]}
    s = load_settings(_write(tmp_path, cfg), environ={})
    checks = s.checks_for(s.models[0], "age")
    assert checks.max_nan_rate == 0.2 and checks.adwin.delta == 0.01
    assert checks.page_hinkley == s.defaults.page_hinkley
    assert s.checks_for(s.models[0], "other") == s.defaults


def test_an_override_for_a_field_the_model_does_not_have_is_a_config_error(tmp_path: Path) -> None:
    """Issue 11 #12: a misspelt override used to be ignored in silence; it names the model and close matches."""
    from monitor.app.pipeline import build_processors
    from tests.helpers import EXAMPLES

    cfg = {"models": [{"name": "churn", "features": {"topic": "f", "schema": str(EXAMPLES / "churn_features.avsc")},
                       "overrides": {"agee": {"max_nan_rate": 0.2}}}]}
    with pytest.raises(ConfigError, match=r"'churn'.*'agee'.*did you mean age"):
        build_processors(load_settings(_write(tmp_path, cfg), environ={}))
    cfg["models"][0]["overrides"] = {"age": {"max_nan_rate": 0.2}}  # type: ignore[index]
    procs = build_processors(load_settings(_write(tmp_path, cfg), environ={}))
    assert procs["f"].checks["age"].max_nan_rate == 0.2  # type: ignore[union-attr]
