"""Typed configuration: a YAML file plus `MONITOR_*` environment overrides.

The only module that reads the environment, and the one place that builds librdkafka config dicts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from monitor.errors import ConfigError

ENV_PREFIX = "MONITOR_"
# Top-level scalar settings an environment variable may override: MONITOR_<NAME>.
_SCALAR_ENV = {
    "GROUP_ID": ("group_id",),
    "INSTANCE_ID": ("instance_id",),
    "REDIS_URL": ("redis_url",),
    "KEY_PREFIX": ("key_prefix",),
    "ALERTS_TOPIC": ("alerts_topic",),
    "ALERTS_FORMAT": ("alerts_format",),
    "DEAD_LETTER_TOPIC": ("dead_letter_topic",),
    "BLOCKS_TOPIC": ("blocks_topic",),
    "HTTP_HOST": ("http", "host"),
    "HTTP_PORT": ("http", "port"),
    "LOG_LEVEL": ("log_level",),
    "START_FROM": ("start_from",),
}
# Pass-through dictionaries: MONITOR_KAFKA__SASL_PASSWORD -> kafka["sasl.password"].
_DICT_ENV = {"KAFKA__": "kafka", "CONSUMER__": "consumer", "PRODUCER__": "producer",
             "SCHEMA_REGISTRY__": "schema_registry"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)


class BatchSettings(_Strict):
    # One checkpoint per partition per batch: with many partitions, larger batches mean fewer, fuller ones.
    max_messages: int = Field(2000, ge=1, le=100_000)
    timeout_s: float = Field(0.5, gt=0)


class AdwinSettings(_Strict):
    """river.drift.ADWIN parameters, applied to standardised values."""

    enabled: bool = True
    # river's default 0.002 raised false alarms on 2 of 200 stationary 30k-event simulator streams even at
    # 0.0002; 2e-6 raised none on 400 streams of 50k and still finds a 1-std shift within ~85 values.
    delta: float = Field(2e-6, gt=0, lt=1)
    clock: int = Field(32, ge=1)
    max_buckets: int = Field(5, ge=2)
    min_window_length: int = Field(5, ge=1)
    grace_period: int = Field(10, ge=1)


class PageHinkleySettings(_Strict):
    """river.drift.PageHinkley parameters, applied to standardised values (units of warm-up std)."""

    enabled: bool = True
    min_instances: int = Field(30, ge=1)
    delta: float = Field(0.5, ge=0)
    threshold: float = Field(25.0, gt=0)
    # river's default fading factor 0.9999 lets the sum hover near delta/(1-alpha) with spread ~70 and
    # raises false alarms on stationary streams; 1.0 is the classic test (docs/detectors.md).
    alpha: float = Field(1.0, gt=0, le=1)
    mode: Literal["up", "down", "both"] = "both"


class CusumSettings(_Strict):
    """The model stage's mean-shift detector: a two-sided CUSUM on standardised values, checked at each slot.

    It runs on the merged slots of all partitions (sums of reference-clipped values), so its delay in events
    does not grow with the partition count. `k` is the allowance (half the shift, in standard deviations,
    that it is built to find quickly) and `h` the decision threshold, the same values as Page-Hinkley's.
    """

    enabled: bool = True
    k: float = Field(0.5, gt=0, description="allowance per value, in standard deviations")
    h: float = Field(25.0, gt=0, description="decision threshold, in standard deviations")


# Default thresholds of the window-vs-reference statistics (README "Checks and defaults" compares them with
# Evidently's and Orbit's): PSI 0.1 (Evidently's PSI default), JS 0.1 and normalised Wasserstein 0.1
# (Evidently's defaults for large references), L-infinity 0.1 (Orbit's), KS 0.1.
DRIFT_THRESHOLDS = {"psi": 0.1, "js": 0.1, "linf": 0.1, "ks": 0.1, "wasserstein": 0.1, "chi2": 0.0}


class DriftSettings(_Strict):
    """Window-versus-reference drift: a chi-squared p-value gate (BH across features) plus an effect floor."""

    enabled: bool = True
    numeric_statistic: Literal["psi", "js", "linf", "ks", "wasserstein"] = "psi"
    categorical_statistic: Literal["psi", "js", "linf", "chi2"] = "js"
    threshold: float | None = Field(None, ge=0, description="effect floor; default per statistic")
    fdr: float = Field(0.001, gt=0, lt=1, description="Benjamini-Hochberg false-discovery rate per window")
    p_max: float | None = Field(None, gt=0, lt=1, description="a drift also needs its chi-squared p-value below "
                                "this (derived from the model's alerts.false_alarms_per_day unless set)")
    min_window_count: int = Field(200, ge=10)

    def threshold_for(self, statistic: str) -> float:
        return self.threshold if self.threshold is not None else DRIFT_THRESHOLDS[statistic]


class WindowSettings(_Strict):
    """How events are grouped: blocks by count or by event time; a window is the last `blocks` blocks.

    The model view merges partitions by event time, so it needs `by: time`: a block is then an event-time
    slot of `block_ms`, the same slot on every partition. `by: count` is for per-partition alerts only.
    """

    by: Literal["count", "time"] = "time"
    block_size: int = Field(100, ge=1, description="events per block (by: count)")
    block_ms: int = Field(10_000, ge=1, description="event-time span of a block, a slot (by: time)")
    blocks: int = Field(30, ge=1, description="blocks in a window")
    mode: Literal["sliding", "tumbling"] = Field(
        "sliding", description="sliding: evaluate at every block; tumbling: every `blocks` blocks")
    resolve_windows: int = Field(3, ge=1, description="evaluations under the threshold before RESOLVED")
    resolve_margin: float = Field(0.2, ge=0, lt=1, description="a window check counts toward RESOLVED only "
                                  "when clear of its threshold by this share (no flapping around it)")
    max_lateness_s: float = Field(86_400.0, gt=0, description="by: time: an event time earlier than the "
                                  "partition's latest by more than this is out of bounds (counted, never moves "
                                  "the windows: the event joins the open block)")
    max_future_s: float = Field(300.0, ge=0, description="by: time: an event time later than its Kafka record's "
                                "timestamp by more than this is out of bounds (a clock or unit error)")


class CheckSettings(_Strict):
    """Per-feature monitoring settings; `defaults` and per-feature `overrides` both use this shape."""

    warmup: int = Field(500, ge=10, description="finite values that fix the mean/std used to standardise")
    clip_z: float = Field(4.0, gt=0, description="standardised values are clipped to +-clip_z for detectors")
    histogram_bins: int = Field(20, ge=2, le=200)
    max_nan_rate: float = Field(0.05, ge=0, le=1)
    max_missing_rate: float = Field(0.10, ge=0, le=1)
    min_window_count: int = Field(200, ge=1, description="events in the window before rate checks apply")
    cooldown_events: int = Field(5000, ge=0, description="unused: a detector's firings now hold one incident "
                                 "(accepted so that existing configs load)")
    max_categories: int = Field(64, ge=1, description="distinct categories tracked before 'other'")
    max_sentinel_rate: float = Field(0.01, ge=0, le=1, description="share of sentinel values (e.g. -1, 9999) a "
                                     "window may hold, without a contract")
    stuck_alpha: float = Field(1e-9, gt=0, lt=1, description="stuck_value: a run of one repeated value is "
                               "stuck when the reference makes a run that long less likely than this")
    stuck_min_run: int = Field(20, ge=0, description="stuck_value: never shorter runs than this (0: the check "
                               "is off, e.g. for a feature that legitimately holds a value for long stretches)")
    max_out_of_range_rate: float = Field(0.01, ge=0, le=1, description="used by inferred contracts")
    max_unseen_rate: float = Field(0.01, ge=0, le=1, description="used by inferred contracts")
    adwin: AdwinSettings = AdwinSettings()
    page_hinkley: PageHinkleySettings = PageHinkleySettings()
    cusum: CusumSettings = CusumSettings()
    drift: DriftSettings = DriftSettings()


# What Kafka accepts as a topic name (and so what may go into a Redis key of ours).
TOPIC_NAME = r"^[A-Za-z0-9._-]{1,249}$"


class StreamSettings(_Strict):
    """One input topic of a model (its features or its predictions) and how to read it."""

    topic: str = Field(pattern=TOPIC_NAME)
    schema_path: Path | None = Field(None, alias="schema")
    format: Literal["plain", "confluent"] = "plain"
    monitor: list[str] | None = None
    exclude: list[str] = []
    categorical: list[str] = []

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _needs_a_schema(self) -> StreamSettings:
        if self.format == "plain" and self.schema_path is None:
            raise ValueError(f"topic {self.topic}: plain Avro needs a 'schema' (.avsc file)")
        return self


class PerformanceSettings(_Strict):
    """Live model performance from delayed labels, and when a drop counts as concept drift."""

    block_size: int = Field(100, ge=1, description="labelled events per block")
    blocks: int = Field(10, ge=1, description="blocks per window")
    min_drop: float = Field(0.02, ge=0, description="accuracy drop (classifier) that matters")
    min_increase: float = Field(0.1, ge=0, description="relative MAE increase (regressor) that matters")
    alpha: float = Field(0.001, gt=0, lt=1, description="one-sided significance of the drop")
    baseline_windows: int = Field(2, ge=1, description="windows that form the baseline without a reference")
    resolve_windows: int = Field(3, ge=1)
    join_ttl_s: float = Field(7 * 24 * 3600, gt=0, description="how long a label may wait for its prediction "
                              "(and a prediction for its label), in event time")
    max_pending: int = Field(50_000, ge=1, description="labels waiting for a prediction, per partition")
    duplicate_memory: int = Field(5_000, ge=0, description="joined ids remembered to spot duplicate labels")
    max_predictions: int = Field(1_000_000, ge=1, description="predictions kept for the join, per partition")
    min_join_share: float = Field(0.8, ge=0, le=1, description="share of settled labels (joined, expired or "
                                  "evicted) that must be joined; below it, a label_join DATA_QUALITY alert")
    # Measured on Bernoulli error streams (docs/architecture.md): HDDM_A at 1e-5 and ADWIN raised no false
    # alarm and found every rise of 12 points in 250-2,100 events; DDM (river's threshold 3) and EDDM
    # raised false alarms. DDM and EDDM are there to switch on, not on by default.
    detectors: list[Literal["ddm", "eddm", "hddm_a", "adwin"]] = ["hddm_a", "adwin"]
    ddm_threshold: float = Field(5.0, gt=0, description="river's default is 3; 5 gave no false alarm")
    # DDM's minimum p + s is meaningless on its first few errors: with a 2% error rate and river's 30, it
    # fires on the first errors it sees. 1,000 labelled events before it may fire.
    ddm_warm_start: int = Field(1000, ge=1)
    hddm_confidence: float = Field(1e-5, gt=0, lt=1, description="river's default 0.001 false-alarmed at "
                                   "error rates of 20-40%")
    adwin_delta: float = Field(2e-6, gt=0, lt=1)
    cooldown_events: int = Field(5_000, ge=0, description="unused: an error-stream detector's firings now hold "
                                 "one incident (accepted so that existing configs load)")
    alert_on_improvement: bool = Field(False, description="send a CONCEPT_DRIFT alert when an error-stream "
                                       "detector finds the error fell (evidence.direction: better)")
    cbpe: bool = Field(True, description="label-free expected accuracy for binary classifiers")
    cbpe_min_drop: float = Field(0.03, ge=0)
    cbpe_min_window: int = Field(500, ge=1, description="scored events a window needs before the CBPE estimate "
                                 "is checked (its standard error at 500 events is at most 0.022)")


class ModelAlertSettings(_Strict):
    """How noisy a model's alerts may be."""

    false_alarms_per_day: float | None = Field(
        None, gt=0, description="the model's budget of false alarms a day: each statistical check's threshold "
        "(drift p-value, CUSUM h) is derived from it, the reference's event rate and the slot length; a "
        "feature's own override of cusum.h or drift.p_max wins")
    send_possible: bool = Field(False, description="also alert, at severity POSSIBLE, a drift that is "
                                "significant but below its effect floor (always recorded in status and history)")


class MultivariateSettings(_Strict):
    """The PCA reconstruction-error check across the features (`monitor.core.multivariate`)."""

    enabled: bool = Field(False, description="run the multivariate check (needs a reference built by this "
                          "version: `reference build` always fits the PCA when there are two numeric features)")
    variance_share: float = Field(0.9, gt=0, lt=1, description="at reference build: keep the principal "
                                  "components explaining this share of the standardised variance")


class ModelSettings(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    id_field: str | None = "event_id"
    time_field: str | None = "event_time"
    version_field: str | None = None
    model_field: str | None = Field(None, description="a field naming the model, when a topic is shared")
    model_id: str | None = Field(None, description="the value of model_field for this model")
    features: StreamSettings
    predictions: StreamSettings | None = None
    overrides: dict[str, dict[str, Any]] = {}
    contract: Path | None = Field(None, description="YAML data contract (model-monitor contract infer)")
    sentinels: dict[str, list[float]] = Field({}, description="per field, values that mean 'no value'")
    freshness_s: float | None = Field(300.0, gt=0, description="VOLUME alert after this long with no event")
    min_rate_ratio: float = Field(0.1, ge=0, le=1, description="VOLUME low_rate below this share of the "
                                  "reference's event rate")
    max_duplicate_rate: float = Field(0.01, ge=0, le=1, description="duplicate event ids allowed per window")
    max_bad_time_rate: float = Field(0.0, ge=0, le=1, description="share of a window's events whose event time "
                                     "is out of bounds (window.max_lateness_s / max_future_s) before the "
                                     "DATA_QUALITY event_time check opens (0: any)")
    uniqueness_memory: int = Field(2000, ge=0, le=100_000, description="recent event ids remembered per "
                                   "partition for the duplicate check (0 = off)")
    window: WindowSettings | None = None
    type: Literal["classifier", "regressor"] = "classifier"
    labels: StreamSettings | None = Field(None, description="the delayed ground truth, joined by id_field")
    label_field: str = "label"
    label_time_field: str | None = "label_time"
    score_field: str | None = Field(None, description="predictions field: probability of class 1 (classifier)")
    prediction_field: str | None = Field(None, description="predictions field: the predicted class or value")
    decision_threshold: float = Field(0.5, gt=0, lt=1)
    performance: PerformanceSettings = PerformanceSettings()
    alerts: ModelAlertSettings = ModelAlertSettings()
    multivariate: MultivariateSettings = MultivariateSettings()
    segments: list[str] = Field([], description="categorical fields of the features stream: the window checks "
                                "(rates, drift) also run per value of each (country=DE, channel=web, ...)")
    max_segments: int = Field(10, ge=1, le=100, description="per segment field, the values with a view of "
                              "their own: the reference's most frequent; the rest are pooled as 'other'")
    min_segment_count: int = Field(500, ge=1, description="events a segment's window needs before its checks "
                                   "apply")
    importance: dict[str, float] = Field(
        {}, description="feature -> importance for ranking features in a prediction drift's explanation; "
        "features left out keep the reference's (|correlation| with the score, from reference build)")

    def streams(self) -> list[tuple[str, StreamSettings]]:
        out = [("features", self.features)]
        if self.predictions is not None:
            out.append(("predictions", self.predictions))
        if self.labels is not None:
            out.append(("labels", self.labels))
        return out

    @model_validator(mode="after")
    def _labels_need_predictions(self) -> ModelSettings:
        if self.labels is not None:
            if self.predictions is None or self.id_field is None:
                raise ValueError(f"model {self.name}: labels need a predictions topic and an id_field to join on")
            if self.prediction_field is None:
                raise ValueError(f"model {self.name}: labels need prediction_field (and score_field for "
                                 f"classifier log-loss, Brier and ROC AUC)")
        return self


class ModelViewSettings(_Strict):
    """Stage 2: every partition's block summaries merged by event time into one view per model stream."""

    enabled: bool = Field(True, description="run the model stage and raise its incidents")
    grace_ms: int = Field(0, ge=0, description="event time a slot waits past the watermark before closing")
    idle_timeout_s: float = Field(30.0, gt=0, description="a partition with no block for this long (daemon "
                                  "clock) stops holding the watermark back")
    model_incident_share: float = Field(0.3, ge=0, le=1, description="when this share of a model's features "
                                        "fail together, one model-wide incident names them all (0 = never)")
    max_open_slots: int = Field(1_000, ge=2, description="slots held open waiting for slow partitions; past it "
                                "the oldest closes and its stragglers count as late")
    max_skew_ms: int = Field(300_000, ge=0, description="stage 1 pauses an input partition whose event time runs "
                             "this far ahead of the slowest one it reads that still has data (catching up on a "
                             "backlog, partitions are read unevenly), until it is within half of it; 0 = never")


class LimitSettings(_Strict):
    """Hard limits: a record beyond one is bad input (dead-lettered with the reason), not data to monitor."""

    max_abs_value: float = Field(1e15, gt=0, description="|value| of a numeric field (NaN/inf are data, counted)")
    max_string_length: int = Field(4096, ge=1, description="characters in a string field")
    max_fields: int = Field(1000, ge=1, description="fields in a writer schema (a feature flood)")


class SecretSource(_Strict):
    """A secret given by reference: the name of an environment variable or a file holding it (a mounted
    Kubernetes secret), never the value itself on a command line."""

    env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    file: Path | None = None

    @model_validator(mode="after")
    def _one(self) -> SecretSource:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of env or file")
        return self

    def read(self, what: str) -> str:
        if self.env is not None:
            value = os.environ.get(self.env)
            if not value:
                raise ConfigError(f"{what}: environment variable {self.env} is not set")
            return value.strip()
        assert self.file is not None
        try:
            return self.file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{what}: cannot read {self.file}: {exc.strerror}") from exc


class AlertmanagerSettings(_Strict):
    url: str = Field(description="Alertmanager's base URL (its v2 API is under /api/v2)", pattern=r"^https?://")
    resend_s: float = Field(60.0, gt=0, description="how often open incidents are posted again (Alertmanager "
                            "ends an alert at its endsAt: each post holds it for max(4 x resend_s, 180 s))")
    generator_url: str | None = Field(None, description="the link in each alert ({model} is replaced); default: "
                                      "the monitor's status page at http.host:http.port")
    bearer_token: SecretSource | None = None
    timeout_s: float = Field(10.0, gt=0)


class WebhookSettings(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="names the receiver in marks, logs and "
                      "dead letters")
    url: str | None = Field(None, pattern=r"^https?://", description="a URL with no secret in it")
    url_secret: SecretSource | None = Field(None, description="the URL from an env variable or file (a Slack "
                                            "incoming webhook's URL is its secret)")
    format: Literal["json", "slack"] = "json"
    in_doubt: Literal["dead_letter", "resend"] = Field(
        "dead_letter", description="an alert whose delivery a crash interrupted (sent or not, nobody knows): "
        "dead_letter puts it on the dead-letter topic (reason delivery_in_doubt) so the receiver never gets it "
        "twice; resend posts it again (for receivers that de-duplicate by the Idempotency-Key header)")
    bearer_token: SecretSource | None = None
    timeout_s: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _one_url(self) -> WebhookSettings:
        if (self.url is None) == (self.url_secret is None):
            raise ValueError(f"webhook {self.name}: give exactly one of url or url_secret")
        return self


class NotifySettings(_Strict):
    """Forward the alerts topic to Alertmanager and webhooks: `model-monitor notify`, or inside `run`."""

    enabled: bool = Field(True, description="with `run`: also forward alerts from this process")
    group_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$",
                                 description="its own consumer group; default <group_id>-notify")
    start_from: Literal["earliest", "latest"] = Field(
        "earliest", description="where a new group starts reading the alerts topic")
    max_age_s: float = Field(86_400.0, gt=0, description="alerts older than this when read are not sent to "
                             "receivers (a new group reading history); Alertmanager still learns which "
                             "incidents are open")
    min_severity: Literal["INFO", "POSSIBLE", "WARNING", "CRITICAL"] = Field(
        "WARNING", description="OPEN and UPDATED alerts below it are not forwarded (RESOLVED always is)")
    give_up_s: float = Field(600.0, gt=0, description="a receiver down this long for one alert: the alert goes "
                             "to the dead-letter topic for that receiver and the next one is tried")
    keep_marks_days: float = Field(14.0, gt=0, description="how long an alert id is remembered as sent")
    alertmanager: AlertmanagerSettings | None = None
    webhooks: list[WebhookSettings] = []

    @model_validator(mode="after")
    def _some_receiver(self) -> NotifySettings:
        if self.alertmanager is None and not self.webhooks:
            raise ValueError("notify: configure alertmanager or at least one webhook")
        names = [w.name for w in self.webhooks]
        if len(set(names)) != len(names) or "alertmanager" in names:
            raise ValueError("notify: webhook names must be unique and not 'alertmanager'")
        return self


class Settings(_Strict):
    kafka: dict[str, str] = Field(default_factory=lambda: {"bootstrap.servers": "127.0.0.1:9092"})
    consumer: dict[str, str] = Field({}, description="librdkafka properties for the consumer only")
    producer: dict[str, str] = Field({}, description="librdkafka properties for the producers only")
    schema_registry: dict[str, str] = {}
    # Part of every Redis key (and of its cluster hash tag): no braces, colons or spaces.
    group_id: str = Field("model-monitor", pattern=r"^[A-Za-z0-9_.-]+$")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="one server (redis://, rediss://) or a Redis "
                           "Cluster (redis+cluster://host:port[,host:port...], rediss+cluster://)")
    instance_id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.-]{1,200}$", description="static group membership (Kafka's "
        "group.instance.id): a replica that restarts within session.timeout.ms gets its partitions back and no "
        "other replica's move. Stable and unique per replica: a StatefulSet pod name (MONITOR_INSTANCE_ID). "
        "Unset: dynamic membership (every restart rebalances)")
    key_prefix: str = Field("mm", pattern=r"^[A-Za-z0-9_.-]+$")
    alerts_topic: str = Field("monitor.alerts", pattern=TOPIC_NAME)
    alerts_format: Literal["plain", "confluent"] = Field(
        "plain", description="plain Avro (schemas/alert.avsc), or confluent: the schema registered under "
        "<alerts_topic>-value in schema_registry.url and every alert in the Confluent wire format, for consumers "
        "using Confluent's AvroDeserializer")
    dead_letter_topic: str = Field("monitor.dead-letter", pattern=TOPIC_NAME)
    blocks_topic: str = Field("monitor.blocks", pattern=TOPIC_NAME,
                              description="internal topic from stage 1 to stage 2, keyed by model")
    model_view: ModelViewSettings = ModelViewSettings()
    partition_alerts: bool = Field(False, description="also raise alerts per input partition (stage 1's own "
                                   "windows and detectors), as before the model view")
    start_from: Literal["earliest", "latest"] = "earliest"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    http: HttpSettings = HttpSettings()
    batch: BatchSettings = BatchSettings()
    max_payload_bytes: int = Field(1_000_000, ge=16)
    limits: LimitSettings = LimitSettings()
    max_outbox: int = Field(10_000, ge=1, description="undelivered alerts before consumption pauses")
    checkpoint_interval_ms: int = Field(
        1000, ge=0, description="a batch that produced no alert, reject or prediction (and, unless a backlog is "
        "being read, no block) may wait this long for its checkpoint (the next one writes both, and the waiting "
        "blocks leave with it); 0 checkpoints every batch. A crash replays the batches not yet checkpointed: "
        "exactly once either way")
    alerts_transactional: bool = Field(False, description="publish alerts in Kafka transactions, so "
                                       "read_committed subscribers never see an aborted send")
    transactional_id: str | None = Field(None, description="default: <group_id>-alerts-<instance_id>, or "
                                         "<group_id>-alerts-<host>-<pid> without an instance_id")
    defaults: CheckSettings = CheckSettings()
    window: WindowSettings = WindowSettings()
    store_check_s: float = Field(
        5.0, gt=0, description="how often a replica checks that Redis still holds the fence and offset it last "
        "wrote for each partition it owns: a Redis failover can lose the last acknowledged writes; a partition "
        "found behind is reloaded and its records consumed again (monitor_state_rollbacks_total)")
    reference_poll_s: float = Field(10.0, gt=0, description="how often the daemon looks for a new active reference")
    on_state_lost: Literal["halt", "restart"] = Field(
        "halt", description="a partition whose Redis state is gone or inconsistent: halt it (not ready, alarm) "
                            "or restart it from the group's committed offset with fresh state (alarm)")
    notify: NotifySettings | None = Field(None, description="forward alerts to Alertmanager and webhooks")
    models: list[ModelSettings] = Field(min_length=1)

    @field_validator("kafka", "consumer", "producer", "schema_registry", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        # librdkafka takes strings; YAML gives ints and bools for things like acks or timeouts.
        if isinstance(value, Mapping):
            return {str(k): _librdkafka_str(v) for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _topics_are_distinct(self) -> Settings:
        seen: dict[str, str] = {}
        for model in self.models:
            for _kind, stream in model.streams():
                if stream.topic in seen:
                    raise ValueError(f"topic {stream.topic} is used twice ({seen[stream.topic]}, {model.name})")
                seen[stream.topic] = model.name
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError("model names must be unique")
        if not self.model_view.enabled and not self.partition_alerts:
            raise ValueError("model_view.enabled is false and partition_alerts is false: nothing would alert")
        if self.model_view.enabled:
            for model in self.models:
                if self.window_for(model).by != "time":
                    raise ValueError(f"model {model.name}: the model view merges partitions by event time, so "
                                     f"window.by must be 'time' (or set model_view.enabled: false and "
                                     f"partition_alerts: true for per-partition count windows)")
        if self.alerts_format == "confluent" and not self.schema_registry.get("url"):
            raise ValueError("alerts_format: confluent registers the alert schema: set schema_registry.url")
        if self.blocks_topic in seen:
            raise ValueError(f"blocks_topic {self.blocks_topic} is also an input topic")
        return self

    # librdkafka configuration: built here and nowhere else.
    def consumer_config(self) -> dict[str, Any]:
        conf: dict[str, Any] = {**self.kafka, **self.consumer}
        conf.update(
            {
                "group.id": self.group_id,
                # Offsets live in Redis with the state; Kafka commits are only for lag dashboards.
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": self.start_from,
                "isolation.level": "read_committed",
                "partition.assignment.strategy": "cooperative-sticky",
            }
        )
        if self.instance_id:
            conf["group.instance.id"] = self.instance_id
        conf.setdefault("max.poll.interval.ms", "300000")
        return conf

    def producer_config(self) -> dict[str, Any]:
        conf: dict[str, Any] = {k: v for k, v in self.kafka.items() if k not in _CONSUMER_ONLY}
        conf.update(self.producer)
        conf.update({"enable.idempotence": True, "acks": "all"})
        conf.setdefault("linger.ms", "5")
        return conf

    def admin_config(self) -> dict[str, Any]:
        return {k: v for k, v in self.kafka.items() if k not in _CONSUMER_ONLY}

    def notify_group(self) -> str:
        """notify's consumer group (and the scope of its Redis keys)."""
        return (self.notify.group_id if self.notify is not None else None) or f"{self.group_id}-notify"

    def model(self, name: str) -> ModelSettings:
        for model in self.models:
            if model.name == name:
                return model
        raise ConfigError(f"no model named {name!r} in the config (have: {', '.join(m.name for m in self.models)})")

    def window_for(self, model: ModelSettings) -> WindowSettings:
        return model.window or self.window

    def checks_for(self, model: ModelSettings, feature: str) -> CheckSettings:
        override = model.overrides.get(feature)
        if not override:
            return self.defaults
        merged = _deep_merge(self.defaults.model_dump(), override)
        try:
            return CheckSettings.model_validate(merged)
        except ValidationError as exc:
            raise ConfigError(f"overrides for {model.name}/{feature}: {exc}") from exc


# Consumer properties that a producer or admin client would warn about if given the shared `kafka` dict.
_CONSUMER_ONLY = {
    "group.id", "group.instance.id", "group.protocol", "session.timeout.ms", "heartbeat.interval.ms",
    "max.poll.interval.ms", "auto.offset.reset", "isolation.level", "enable.auto.commit", "auto.commit.interval.ms",
    "enable.auto.offset.store", "partition.assignment.strategy", "fetch.min.bytes", "fetch.max.bytes",
    "fetch.wait.max.ms", "max.partition.fetch.bytes", "queued.min.messages", "queued.max.messages.kbytes",
    "enable.partition.eof", "check.crcs", "coordinator.query.interval.ms",
}


def _librdkafka_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_env(environ: Mapping[str, str], name: str) -> str | None:
    """`MONITOR_X` or, for secrets, `MONITOR_X_FILE` naming a file that holds the value."""
    if name in environ:
        return environ[name]
    path = environ.get(name + "_FILE")
    if path is None:
        return None
    try:
        return Path(path).read_text().rstrip("\n")
    except OSError as exc:
        raise ConfigError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from exc


def apply_env(raw: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Return the raw config with `MONITOR_*` overrides applied (values from the environment win)."""
    out = dict(raw)
    for suffix, path in _SCALAR_ENV.items():
        value = _read_env(environ, ENV_PREFIX + suffix)
        if value is None:
            continue
        target = out
        for part in path[:-1]:
            target[part] = dict(target.get(part) or {})
            target = target[part]
        target[path[-1]] = value
    for prefix, section in _DICT_ENV.items():
        full = ENV_PREFIX + prefix
        names = {k.removesuffix("_FILE") for k in environ if k.startswith(full)}
        for name in sorted(names):
            value = _read_env(environ, name)
            if value is None:
                continue
            key = name[len(full) :].lower().replace("_", ".")
            out[section] = {**(out.get(section) or {}), key: value}
    return out


def load_settings(path: str | Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Load a YAML config file, apply environment overrides, validate, resolve schema paths."""
    env = os.environ if environ is None else environ
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must be a mapping at the top level")
    raw = apply_env(raw, env)
    base = path.parent.resolve()
    for model in raw.get("models") or []:
        if isinstance(model, dict) and model.get("contract"):
            contract = Path(model["contract"])
            model["contract"] = contract if contract.is_absolute() else base / contract
        for kind in ("features", "predictions", "labels"):
            stream = model.get(kind) if isinstance(model, dict) else None
            if isinstance(stream, dict) and stream.get("schema"):
                schema = Path(stream["schema"])
                stream["schema"] = schema if schema.is_absolute() else base / schema
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"config {path}: {exc}") from exc
