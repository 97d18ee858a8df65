"""Issue 3 acceptance, in process: each incident raises the right alert for its feature and nothing else."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from monitor.app.pipeline import StreamProcessor, build_processors
from monitor.cli.simulate import Incident, Simulator, without_field
from monitor.core.profiles import ReferenceProfile
from monitor.core.schema import field_types
from monitor.core.types import Alert, RawRecord
from monitor.io.avro import encode_confluent, encode_plain, load_schema, registry_client
from monitor.profile.contract import dump_contract, infer_contract, load_contract
from monitor.profile.store import profile_size
from monitor.settings import Settings, load_settings
from tests.helpers import EXAMPLES, PER_PARTITION

ONSET = 10_000


def _settings(tmp_path: Path, extra_model: dict[str, Any] | None = None, **top: Any) -> Settings:
    cfg = yaml.safe_load((EXAMPLES / "monitor.yaml").read_text())
    model = cfg["models"][0]
    for kind in ("features", "predictions", "labels"):
        model[kind]["schema"] = str(EXAMPLES / model[kind]["schema"])
    model["sentinels"] = {"days_since_login": [-1.0]}
    model.update(extra_model or {})
    cfg.update(PER_PARTITION)
    cfg.update(top)
    path = tmp_path / "monitor.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return load_settings(path, environ={})


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> ReferenceProfile:
    """A profile of 100,000 simulated training rows, built through the real file reader."""
    from tests.test_model_view import build_reference

    return build_reference(tmp_path_factory.mktemp("ref"))


@pytest.fixture(scope="module")
def contract_path(reference: ReferenceProfile, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("contract")
    settings = _settings(tmp)
    model = settings.models[0]
    types = field_types(load_schema(EXAMPLES / "churn_features.avsc"))
    checks = {n: settings.checks_for(model, n) for n in reference.fields}
    path = tmp / "churn.contract.yaml"
    path.write_text(dump_contract(infer_contract(reference, types, checks)))
    return path


def _processor(tmp_path: Path, reference: ReferenceProfile, contract_path: Path, **model: Any) -> StreamProcessor:
    settings = _settings(tmp_path, {"contract": str(contract_path), **model})
    return build_processors(settings, {"churn": reference})["churn.features"]


def _run(proc: StreamProcessor, incidents: list[str], events: int = 20_000, seed: int = 200,
         encode: Any = None) -> tuple[list[Alert], Any]:
    sim = Simulator(seed=seed, incidents=[Incident.parse(i) for i in incidents])
    schema = proc.decoder.reader_schema
    part = proc.new_partition(0)
    alerts: list[Alert] = []
    offset = 0
    for feats, _ in sim.batches(events, 500):
        records = []
        for f in feats:
            value = encode(f) if encode else encode_plain(schema, f)
            records.append(RawRecord(proc.topic, 0, offset, None, value))
            offset += 1
        alerts += proc.process(part, records).alerts
    return alerts, part


def _index(alert: Alert) -> int:
    return alert.source_offset  # one partition, one record per event: offset == event index


def test_reference_profile_is_compact_and_has_quantile_bins(reference: ReferenceProfile) -> None:
    """Numeric fields get <= 50 quantile bins holding about equal shares; categories get their frequencies."""
    age = reference.fields["age"]
    assert age.kind == "numeric" and len(age.fractions) == len(age.edges) + 1 <= 50
    assert np.allclose(age.fractions, 1 / len(age.fractions), atol=0.003)
    plan = reference.fields["plan"]
    assert plan.kind == "categorical" and plan.categories[0] == "basic"
    assert plan.fractions[0] == pytest.approx(0.5, abs=0.01)
    assert reference.fields["credit_score"].null_rate == pytest.approx(0.01, abs=0.002)
    assert reference.event_rate == pytest.approx(100.0, rel=1e-3)  # the simulator's 10 ms spacing
    assert profile_size(reference) < 200 * 1024
    assert ReferenceProfile.from_json(reference.to_json()) == reference


def test_clean_stream_raises_nothing(tmp_path: Path, reference: ReferenceProfile, contract_path: Path) -> None:
    alerts, _ = _run(_processor(tmp_path, reference, contract_path), [])
    assert alerts == []


@pytest.mark.parametrize(
    ("incident", "feature", "kind", "check"),
    [
        ("new_category:feature=region,start=10000,rate=0.05,value=antarctica", "region", "DATA_QUALITY",
         "unseen_category"),
        ("out_of_range:feature=age,start=10000,rate=0.1", "age", "DATA_QUALITY", "out_of_range"),
        ("sentinel:feature=days_since_login,start=10000,rate=0.2,value=-1", "days_since_login", "DATA_QUALITY",
         "sentinel_rate"),
        ("shift:feature=monthly_charges,start=10000,size=0.5", "monthly_charges", "DRIFT", "psi"),
        ("variance:feature=session_minutes,start=10000,factor=2", "session_minutes", "DRIFT", "psi"),
    ],
)
def test_incident_raises_the_right_alert_for_that_feature_only(
    tmp_path: Path, reference: ReferenceProfile, contract_path: Path, incident: str, feature: str, kind: str,
    check: str,
) -> None:
    alerts, _ = _run(_processor(tmp_path, reference, contract_path), [incident])
    opened = [a for a in alerts if a.status == "OPEN"]
    assert {a.feature for a in opened} == {feature}
    hits = [a for a in opened if a.kind == kind and a.check == check]
    assert hits, [(a.kind, a.check) for a in opened]
    first = min(_index(a) for a in hits)
    assert ONSET <= first < ONSET + 5 * 1000  # within 5 windows of 1,000 events
    if check == "unseen_category":
        assert "antarctica" in hits[0].evidence["new_values"]
    if kind == "DRIFT":
        ev = hits[0].evidence
        assert float(ev["p_value"]) < 0.001 and "top_bin_1" in ev and "reference" in ev["top_bin_1"]


def test_a_dropped_field_raises_schema_alert(tmp_path: Path, reference: ReferenceProfile,
                                             contract_path: Path) -> None:
    """Confluent wire format: a new writer schema without a field raises SCHEMA naming it, once."""
    from confluent_kafka.schema_registry import Schema

    registry = {"url": f"mock://{tmp_path.name}"}
    settings = _settings(tmp_path, {"contract": str(contract_path)}, schema_registry=registry)
    raw = yaml.safe_load((tmp_path / "monitor.yaml").read_text())
    raw["models"][0]["features"]["format"] = "confluent"
    (tmp_path / "monitor.yaml").write_text(yaml.safe_dump(raw))
    settings = load_settings(tmp_path / "monitor.yaml", environ={})
    proc = build_processors(settings, {"churn": reference})["churn.features"]
    full = load_schema(EXAMPLES / "churn_features.avsc")
    reduced = without_field(json.loads((EXAMPLES / "churn_features.avsc").read_text()), "discount_rate")
    client = registry_client(registry)
    ids = {
        False: client.register_schema("f-value", Schema(json.dumps(json.loads(
            (EXAMPLES / "churn_features.avsc").read_text())), "AVRO")),
        True: client.register_schema("f-value", Schema(json.dumps(reduced), "AVRO")),
    }
    reduced_parsed = load_schema_dict(reduced)

    def encode(rec: dict[str, Any]) -> bytes:
        dropped = "discount_rate" not in rec
        return encode_confluent(reduced_parsed if dropped else full, ids[dropped], rec)

    alerts, part = _run(proc, ["drop_field:feature=discount_rate,start=10000"], encode=encode)
    opened = [a for a in alerts if a.status == "OPEN"]
    assert {(a.kind, a.check, a.feature) for a in opened} == {("SCHEMA", "schema_field_missing", "discount_rate")}
    assert _index(opened[0]) == ONSET
    assert part.rejects == 10_000  # the reader needs discount_rate, so those records are dead-lettered


def load_schema_dict(schema: dict[str, Any]) -> Any:
    from fastavro import parse_schema

    return parse_schema(schema)


def test_a_stopped_stream_raises_volume_then_resolves(tmp_path: Path, reference: ReferenceProfile,
                                                      contract_path: Path) -> None:
    """No event for longer than freshness_s: one VOLUME alert; the next event resolves it."""
    proc = _processor(tmp_path, reference, contract_path, freshness_s=60)
    _, part = _run(proc, [], events=2_000)
    assert proc.silence(part, 30.0) == ([], [])
    (stopped,), _signals = proc.silence(part, 61.0)
    assert (stopped.kind, stopped.check, stopped.status) == ("VOLUME", "stream_stopped", "OPEN")
    assert stopped.source_offset == 1_999
    assert proc.silence(part, 120.0) == ([], [])  # still open: not repeated
    sim = Simulator(seed=5)
    feats = next(sim.batches(10, 10))[0]
    records = [RawRecord(proc.topic, 0, 2_000 + i, None, encode_plain(proc.decoder.reader_schema, f))
               for i, f in enumerate(feats)]
    resolved = [a for a in proc.process(part, records).alerts if a.check == "stream_stopped"]
    assert [a.status for a in resolved] == ["RESOLVED"]


def test_open_drift_survives_a_restart_and_resolves_later(tmp_path: Path, reference: ReferenceProfile,
                                                          contract_path: Path) -> None:
    """Restart keeps an open alert open (no second OPEN) and resolves it once the shift is over."""
    proc = _processor(tmp_path, reference, contract_path)
    sim = Simulator(seed=300, incidents=[Incident.parse("shift:feature=monthly_charges,start=3000,length=5000,"
                                                        "size=1.0")])
    schema = proc.decoder.reader_schema
    rows = [f for feats, _ in sim.batches(16_000) for f in feats]
    records = [RawRecord(proc.topic, 0, i, None, encode_plain(schema, r)) for i, r in enumerate(rows)]
    part = proc.new_partition(0)
    before = [a for a in proc.process(part, records[:6000]).alerts if a.check == "psi"]
    assert [a.status for a in before] == ["OPEN"]
    restarted = proc.new_partition(0)
    restarted.load_fields(part.to_fields())
    after = [a for a in proc.process(restarted, records[6000:]).alerts if a.check == "psi"]
    assert [a.status for a in after] == ["RESOLVED"]
    # After the shift ended, and at the latest 3 evaluations after the window holds no shifted event.
    assert 8_000 < _index(after[0]) <= 8_999 + 3 * 100


def test_contract_file_round_trips(contract_path: Path) -> None:
    """The inferred contract loads back; ranges contain the reference range; categories are listed."""
    contract = load_contract(contract_path)
    assert contract.fields["plan"].allowed == ["basic", "standard", "premium"]
    age = contract.fields["age"]
    assert age.min is not None and age.max is not None and age.min < 0 < 100 < age.max
    assert contract.fields["credit_score"].nullable is True
    assert contract.fields["days_since_login"].sentinels == [-1.0]


def test_a_large_lasting_shift_stays_open(tmp_path: Path, reference: ReferenceProfile, contract_path: Path) -> None:
    """A shift so large its p-value underflows to 0 opens once and is never resolved while it lasts."""
    alerts, part = _run(_processor(tmp_path, reference, contract_path),
                        ["shift:feature=monthly_charges,start=5000,size=3.0"])
    psi = [(a.status, a.evidence["p_value"]) for a in alerts if a.check == "psi"]
    assert [s for s, _ in psi] == ["OPEN"]
    assert "monthly_charges/psi" in part.open_alerts


def test_duplicate_event_ids(tmp_path: Path, reference: ReferenceProfile, contract_path: Path) -> None:
    """5% of events repeat a recent event id: DATA_QUALITY duplicate_id on the id field, nothing else."""
    proc = _processor(tmp_path, reference, contract_path)
    sim = Simulator(seed=210)
    rows = [f for feats, _ in sim.batches(20_000) for f in feats]
    rng = np.random.default_rng(0)
    for i in rng.choice(np.arange(ONSET, 20_000), 500, replace=False):
        rows[i]["event_id"] = rows[i - int(rng.integers(1, 1_000))]["event_id"]
    records = [RawRecord(proc.topic, 0, i, None, encode_plain(proc.decoder.reader_schema, r))
               for i, r in enumerate(rows)]
    part = proc.new_partition(0)
    opened = [a for a in proc.process(part, records).alerts if a.status == "OPEN"]
    assert {(a.kind, a.check, a.feature) for a in opened} == {("DATA_QUALITY", "duplicate_id", "event_id")}
    assert ONSET <= opened[0].source_offset < ONSET + 1_000


def test_event_rate_far_below_the_reference(tmp_path: Path, reference: ReferenceProfile,
                                            contract_path: Path) -> None:
    """Events 20x sparser in event time than in the reference (per partition, scaled by 3 partitions): VOLUME."""
    proc = _processor(tmp_path, reference, contract_path)
    sim = Simulator(seed=220, interval_ms=600)  # 3 partitions x 1/0.6 s = 5 events/s vs 100/s
    rows = [f for feats, _ in sim.batches(3_000) for f in feats]
    records = [RawRecord(proc.topic, 0, i, None, encode_plain(proc.decoder.reader_schema, r))
               for i, r in enumerate(rows)]
    part = proc.new_partition(0, topic_partitions=3)
    opened = [a for a in proc.process(part, records).alerts if a.status == "OPEN"]
    assert {(a.kind, a.check) for a in opened} == {("VOLUME", "low_rate")}
    assert opened[0].statistic == pytest.approx(3 / 0.6, rel=1e-9)
    assert opened[0].threshold == pytest.approx(0.1 * reference.event_rate)  # type: ignore[operator]
    fine = proc.new_partition(0, topic_partitions=3)
    normal = [RawRecord(proc.topic, 0, i, None, encode_plain(proc.decoder.reader_schema, r))
              for i, r in enumerate(f for feats, _ in Simulator(seed=221, interval_ms=30).batches(3_000)
                                    for f in feats)]
    assert [a for a in proc.process(fine, normal).alerts if a.check == "low_rate"] == []


def test_a_new_schema_version_with_the_same_fields_is_reported_once(
    tmp_path: Path, reference: ReferenceProfile, contract_path: Path
) -> None:
    """The first writer schema is the baseline; a later id with identical fields gives one INFO-kind SCHEMA."""
    part = _processor(tmp_path, reference, contract_path).new_partition(0)
    assert part.schema_change(11, [], 0, None) == []
    (new,) = part.schema_change(12, [], 50, None)
    assert (new.kind, new.check, new.feature, new.offset) == ("SCHEMA", "schema_new_version", "*", 50)
    assert part.schema_change(12, [], 60, None) == []


def test_the_sentinel_limit_is_its_own_setting_not_the_range_limit() -> None:
    """Issue 11 #5: without a contract, `max_out_of_range_rate` used to become the sentinel limit. A window with
    10% sentinels passes under max_sentinel_rate 0.2 however tight the range limit, and fails under 0.05."""
    from monitor.core.partition import Limits, NumericFeature
    from monitor.core.schema import FieldSpec
    from monitor.settings import CheckSettings

    def sentinel_check(checks: CheckSettings) -> Any:
        limits = Limits.build(checks, None, [-1.0])
        feat = NumericFeature(FieldSpec("x", "numeric", True), checks, 1, None, limits, None)
        values = np.where(np.arange(1000) % 10 == 0, -1.0, np.arange(1000) / 7.0)
        feat.add(values, np.zeros(1000, dtype=bool), np.arange(1000))
        feat.window.close_block()
        return next(v for v in feat.window_checks(100) if v.check == "sentinel_rate")

    loose = sentinel_check(CheckSettings(max_sentinel_rate=0.2, max_out_of_range_rate=0.001))
    assert loose.statistic == pytest.approx(0.1) and loose.threshold == 0.2 and not loose.firing
    tight = sentinel_check(CheckSettings(max_sentinel_rate=0.05, max_out_of_range_rate=0.5))
    assert tight.threshold == 0.05 and tight.firing
