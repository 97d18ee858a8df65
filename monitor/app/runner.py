"""One process, one or both stages: each stage is a `Daemon` with its own consumer group, on its own thread.

`model-monitor run --stage all` (the default) runs stage 1 (ingest) and stage 2 (models) side by side; the
process is live while both are, ready when both are, and stops both on SIGTERM. With `notify:` in the config
(and `enabled`, the default), a third thread forwards the alerts topic (`monitor.app.notify`).
"""

from __future__ import annotations

import gc
import threading
from typing import Literal

import structlog

from monitor.app.daemon import Daemon, render_status_page
from monitor.app.notify import Notifier
from monitor.errors import MonitorError
from monitor.io.history import DriftHistory
from monitor.io.join import JoinStore
from monitor.io.notify_store import NotifyStore
from monitor.io.state import StateStore
from monitor.ops.metrics import Metrics
from monitor.profile.store import ReferenceStore
from monitor.settings import Settings

log = structlog.get_logger("monitor.runner")
Stages = Literal["ingest", "models", "all"]


class Monitor:
    """The stages this process runs, sharing one metrics registry and one set of stores."""

    def __init__(self, settings: Settings, store: StateStore, stages: Stages = "all", *,
                 references: ReferenceStore | None = None, joins: JoinStore | None = None,
                 history: DriftHistory | None = None, metrics: Metrics | None = None,
                 notify_store: NotifyStore | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        wanted = ["ingest", "models"] if stages == "all" else [stages]
        if not settings.model_view.enabled:
            wanted = [s for s in wanted if s == "ingest"]
        self.daemons = [Daemon(settings, store, self.metrics, references=references, joins=joins, history=history,
                               stage=stage) for stage in wanted]  # type: ignore[arg-type]
        # `notify:` with enabled (the default) in the config: this process forwards the alerts too.
        self.notifier = Notifier(settings, notify_store, self.metrics) \
            if settings.notify is not None and settings.notify.enabled and notify_store is not None else None
        self.stop_event = threading.Event()

    def _parts(self) -> list[Daemon | Notifier]:
        return [*self.daemons, *([self.notifier] if self.notifier is not None else [])]

    def is_live(self) -> bool:
        return all(d.is_live() for d in self._parts())

    def is_ready(self) -> bool:
        return all(d.is_ready() for d in self._parts())

    def status_page(self) -> str:
        return render_status_page(self.daemons)

    def stop(self) -> None:
        self.stop_event.set()
        for d in self._parts():
            d.stop()

    def run(self) -> int:
        """Run every stage; when one ends (fatal error or stop), stop the others; exit 1 if any failed."""
        codes: dict[str, int] = {}

        def work(d: Daemon | Notifier) -> None:
            stage = d.stage if isinstance(d, Daemon) else "notify"
            try:
                codes[stage] = d.run()
            except MonitorError as exc:  # a clear error (a setting librdkafka refused): no traceback
                log.error("stage.failed", stage=stage, error=str(exc), error_class=type(exc).__name__)
                codes[stage] = 2
            except Exception:
                log.exception("stage.crashed", stage=stage)
                codes[stage] = 1
            finally:
                self.stop()

        threads = [threading.Thread(target=work, args=(d,), name=f"stage-{getattr(d, 'stage', 'notify')}",
                                    daemon=True) for d in self._parts()]
        # What exists now (the libraries' modules and types, settings, processors: ~200,000 objects) lives as
        # long as the process: the cyclic garbage collector stops scanning it. A full collection took ~80 ms
        # and ran at every partition assignment of 48 partitions, and now and then under load.
        gc.freeze()
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.5)  # a bounded wait keeps the main thread free to run signal handlers
        return max(codes.values(), default=0)
