"""The daemon's Prometheus metrics, on a registry injected per daemon (each test gets a fresh one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from monitor.ops.logs import dropped_lines


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter("monitor_events_total", "Valid events processed", ["model", "stream"], registry=r)
        self.rejects = Counter("monitor_rejects_total", "Records sent to the dead-letter topic",
                               ["model", "stream", "reason"], registry=r)
        self.alerts = Counter("monitor_alerts_total", "Alerts raised", ["model", "kind", "check"], registry=r)
        self.bad_times = Counter("monitor_event_times_out_of_bounds_total", "Events whose event time was out of "
                                 "bounds (window.max_lateness_s / max_future_s): counted, placed at the "
                                 "partition's watermark", ["model", "stream"], registry=r)
        self.alerts_delivered = Counter("monitor_alerts_delivered_total", "Alerts Kafka confirmed", registry=r)
        self.alert_failures = Counter("monitor_alert_delivery_failures_total", "Alert sends Kafka refused "
                                      "(the alert stays in the outbox)", registry=r)
        self.dead_letter_failures = Counter("monitor_dead_letter_failures_total", "Batches whose rejects the "
                                            "dead-letter topic refused (the batch is redone)", registry=r)
        self.state_bytes_written = Counter("monitor_state_bytes_written_total", "Bytes of state fields written to "
                                           "the store by checkpoints (changed fields only)", ["topic"], registry=r)
        self.notify = Counter("monitor_notify_alerts_total", "Alerts notify handled per receiver (delivered, "
                              "duplicate_skipped, dead_lettered, in_doubt, too_old, below_min_severity)",
                              ["receiver", "result"], registry=r)
        self.notify_retries = Counter("monitor_notify_retries_total", "Deliveries retried (receiver unreachable, "
                                      "5xx, 408, 429)", ["receiver"], registry=r)
        self.notify_firing = Gauge("monitor_notify_firing_incidents", "Incidents notify holds firing in "
                                   "Alertmanager", registry=r)
        self.outbox = Gauge("monitor_outbox_pending", "Alerts and block summaries waiting for a delivery report",
                            ["stage"], registry=r)
        self.lag = Gauge("monitor_consumer_lag", "High watermark minus next offset", ["topic", "partition"],
                         registry=r)
        self.batch_seconds = Histogram("monitor_batch_seconds", "Time to process and checkpoint one batch",
                                       buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=r)
        self.assigned = Gauge("monitor_assigned_partitions", "Partitions owned (input topics for stage ingest, "
                              "the blocks topic for stage models)", ["stage"], registry=r)
        self.outages = Counter("monitor_dependency_outages_total", "Pauses because a dependency was down",
                               ["dependency"], registry=r)
        self.log_dropped = Gauge("monitor_log_lines_dropped", "Log lines the process could not write (stderr "
                                 "closed, or its reader gone) since it started; it goes on without them",
                                 registry=r)
        self.log_dropped.set_function(lambda: float(dropped_lines()))
        self.label_lag = Histogram("monitor_label_lag_seconds", "Label time minus prediction time of joined labels",
                                   ["model"], buckets=(1, 10, 60, 600, 3600, 6 * 3600, 86400, 7 * 86400),
                                   registry=r)
        self.joins = Gauge("monitor_label_join", "Labels per join result (joined, duplicates, early, expired, "
                           "evicted, pending)", ["model", "partition", "result"], registry=r)
        self.unlabelled = Counter("monitor_predictions_unlabelled_total", "Predictions dropped from the join "
                                  "store (TTL or cap) without a label", ["model"], registry=r)
        self.records_lost = Counter("monitor_records_unread_total", "Records of an input partition that were gone "
                                    "before this monitor read them (the stored offset was below the log start: "
                                    "deleted by retention)", ["topic", "partition"], registry=r)
        self.never_delivered = Gauge("monitor_partition_never_delivered", "1 for an assigned input partition that "
                                     "has delivered no event for freshness_s since it was assigned",
                                     ["topic", "partition"], registry=r)
        self.unwritable = Gauge("monitor_partition_unwritable", "1 for an input partition found without a leader "
                                "or with fewer in-sync replicas than min.insync.replicas while quiet past "
                                "freshness_s: its quiet is Kafka's, not the stream's (no stream_stopped)",
                                ["topic", "partition"], registry=r)
        self.consumer_replacements = Counter("monitor_consumer_replacements_total", "Kafka consumers replaced "
                                             "after a fatal error (e.g. a static member fenced by the group "
                                             "coordinator)", ["stage"], registry=r)
        self.rollbacks = Counter("monitor_state_rollbacks_total", "Times the store was found behind what this "
                                 "replica had written to it (a Redis failover lost acknowledged writes): the "
                                 "partition was reloaded and its records consumed again", ["topic", "partition"],
                                 registry=r)
        self.records_replayed = Counter("monitor_records_replayed_total", "Records consumed again because the "
                                        "store rolled back (see monitor_state_rollbacks_total)",
                                        ["topic", "partition"], registry=r)
        self.state_lost = Gauge("monitor_state_lost", "1 for a partition whose Redis state was lost or "
                                "inconsistent (alarm)", ["topic", "partition"], registry=r)
        self.drift = Gauge("monitor_drift_statistic", "Window-vs-reference drift statistic at the last window "
                           "(partition=\"all\": the model view over every partition)",
                           ["model", "stream", "feature", "statistic", "partition"], registry=r)
        self.ready = Gauge("monitor_ready", "1 when partitions are assigned and state is loaded", ["stage"],
                           registry=r)
        self.late_blocks = Gauge("monitor_late_blocks", "Block summaries that came after their slot had closed "
                                 "(counted, never reopening it)", ["model", "stream"], registry=r)
        self.duplicate_blocks = Gauge("monitor_duplicate_blocks", "Block summaries re-sent after a crash and "
                                      "dropped by sequence number", ["model", "stream"], registry=r)

    def forget_partition(self, topic: str, partition: int, model: str | None = None, stream: str | None = None
                         ) -> None:
        """Drop the series of a partition this replica gave up: its next owner reports them, and a sum over
        replicas (lag in a dashboard or an alert rule) must not count them twice."""
        p = str(partition)
        _remove(self.lag, ("topic", "partition"), {"topic": topic, "partition": p})
        _remove(self.state_lost, ("topic", "partition"), {"topic": topic, "partition": p})
        _remove(self.unwritable, ("topic", "partition"), {"topic": topic, "partition": p})
        if model is not None:
            _remove(self.joins, ("model", "partition", "result"), {"model": model, "partition": p})
            if stream is not None:
                _remove(self.drift, ("model", "stream", "feature", "statistic", "partition"),
                        {"model": model, "stream": stream, "partition": p})


def _remove(metric: Gauge, names: tuple[str, ...], match: dict[str, str]) -> None:
    """Remove every child of `metric` (label names `names`, in order) whose labels include `match`."""
    for family in metric.collect():
        seen = {tuple(s.labels[n] for n in names) for s in family.samples
                if all(s.labels.get(k) == v for k, v in match.items())}
        for values in seen:
            metric.remove(*values)
