"""Issue 15 through the real daemon on Kafka and Redis: a reference built by the CLI (with the PCA and each
segment's profiles), segments and the multivariate check on; a NaN burst of the whole stream is one incident
(no segment opens one of its own); the segments' views and the derived field are in both stages' stored state;
`status --json` has the segment table."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import fastavro
import pytest
import yaml

from monitor.io.avro import schemas_dir
from monitor.io.redis_store import RedisStore
from tests.helpers import (
    MODEL_VIEW,
    DaemonProcess,
    Setup,
    _clean_env,
    both_stages_done,
    produce_simulated,
    read_topic,
    wait_until,
)

pytestmark = pytest.mark.integration


def test_segments_and_the_multivariate_check_in_the_daemon(kafka_bootstrap: str, redis_url: str, tmp_path: Path,
                                                           daemons: list[DaemonProcess]) -> None:
    setup = Setup(uuid.uuid4().hex[:10], kafka_bootstrap, redis_url, tmp_path, partitions=3)
    setup.create_topics()
    config = setup.write_config(MODEL_VIEW)
    raw = yaml.safe_load(config.read_text())
    raw["models"][0].update({"segments": ["region"], "max_segments": 3, "min_segment_count": 200,
                             "multivariate": {"enabled": True}})
    config.write_text(yaml.safe_dump(raw))

    def cli(*args: str) -> str:
        return subprocess.run([sys.executable, "-m", "monitor", *args, "--config", str(config)], check=True,
                              capture_output=True, text=True, env=_clean_env()).stdout

    cli("simulate", "--model", "churn", "--events", "30000", "--seed", "3", "--out", str(tmp_path / "t.parquet"))
    cli("reference", "build", "--model", "churn", "--input", str(tmp_path / "t.parquet"))
    produce_simulated(setup, 12_000, seed=4, incidents=[
        "nan_burst:feature=credit_score,start=4000,length=2500,rate=0.3"])
    daemons.append(d := DaemonProcess(config, tmp_path / "daemon.log").start())
    wait_until(lambda: both_stages_done(setup), 180, "both stages to reach the end of their input")
    schema = fastavro.parse_schema(json.loads((schemas_dir() / "alert.avsc").read_text()))
    alerts: list[dict[str, Any]] = [fastavro.schemaless_reader(io.BytesIO(m.value()), schema, None)
                                    for m in read_topic(setup.bootstrap, setup.alerts, idle=1.5)]
    assert d.terminate() == 0
    for a in alerts:
        print(a["status"], a["segment"], a["feature"], a["check"], a["statistic"], a["window"]["count"],
              {k: a["evidence"].get(k) for k in ("window_slot", "stream_rate", "versus_stream_p", "nan", "dbg")})
    nan = [(a["status"], a["segment"]) for a in alerts if a["feature"] == "credit_score" and a["check"] == "nan_rate"]
    assert nan and nan[0] == ("OPEN", None) and nan[-1] == ("RESOLVED", None), nan
    assert not [a for a in alerts if a["segment"] is not None and a["feature"] == "credit_score"], alerts

    store = RedisStore.from_url(redis_url, setup.prefix, setup.group)
    stage2 = {k for p in range(3) for k in store.read(setup.blocks, p).fields}
    views = {k for k in stage2 if k.startswith("churn/features#region=")}
    assert views >= {"churn/features#region=north", "churn/features#region=(other)"}, sorted(stage2)
    stage1 = {k for p in range(3) for k in store.read(setup.features, p).fields}
    assert any(k.startswith("#seg/region=north/") for k in stage1)
    from monitor.core.state_codec import read_fields

    features_state = next(read_fields(store.read(setup.blocks, p).fields, ["churn/features"])["churn/features"]
                          for p in range(3) if "churn/features" in store.read(setup.blocks, p).fields)
    assert "*multivariate" in features_state["features"]
    assert "*" in features_state["last_drift"] and features_state["last_drift"]["*"][0] == "multivariate"
    status = json.loads(cli("status", "--json"))
    assert set(status["models"]["churn"]["segments"]) >= {"region=north", "region=(other)"}
