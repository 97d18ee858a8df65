"""structlog configured once, by the CLI: JSON lines on stderr, one event per line, no payload values."""

from __future__ import annotations

import contextlib
import logging
import sys

import structlog

_LIBRDKAFKA = "monitor.librdkafka"


class _Stderr:
    """Whatever `sys.stderr` is when a line is written, not when logging was configured (a test harness, or
    an embedding program, may swap it and close the old one).

    A line that cannot be written (its reader went away: a log shipper that died, `| head`; or the stream
    was closed) is dropped and counted, and the daemon goes on, as the standard library's logging handlers
    do. Raising instead ended a stage's thread mid-batch, and the process then hung in the consumer's close."""

    dropped = 0

    def write(self, text: str) -> int:
        try:
            return sys.stderr.write(text)
        except (OSError, ValueError):  # EPIPE and other write errors; ValueError: a closed file
            _Stderr.dropped += 1
            return 0

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()


def dropped_lines() -> int:
    """Log lines not written since the process started (`monitor_log_lines_dropped`)."""
    return _Stderr.dropped


def configure_logging(level: str = "info") -> None:
    numeric = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=True),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]  # a line: one write
        cache_logger_on_first_use=True,
    )


class _ToStructlog(logging.Handler):
    """Forwards librdkafka's log lines (handed to Python logging by confluent-kafka) as structured events."""

    def emit(self, record: logging.LogRecord) -> None:
        level = record.levelname.lower()
        log = structlog.get_logger(_LIBRDKAFKA)
        getattr(log, level if level in ("debug", "info", "warning", "error") else "warning")(
            "librdkafka", message=record.getMessage()
        )


def librdkafka_logger() -> logging.Logger:
    """The logger to pass as confluent-kafka's `logger` config, so its lines are JSON like ours."""
    logger = logging.getLogger(_LIBRDKAFKA)
    if not logger.handlers:
        logger.addHandler(_ToStructlog())
        logger.propagate = False
        logger.setLevel(logging.INFO)
    return logger
