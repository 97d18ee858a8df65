"""Logging writes to the stderr of the moment: a test (or a program embedding the CLI) that swaps sys.stderr
and closes it must not break every later log line (it did: `ValueError: I/O operation on closed file` in
whatever test logged next, e.g. notify's retries after the CLI ran under capsys)."""

from __future__ import annotations

import io
import json
import sys

import pytest
import structlog

from monitor.ops.logs import configure_logging


def test_lines_go_to_the_current_stderr_even_after_the_one_configured_was_closed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging("info")
    structlog.get_logger("t").info("one", n=1)
    first.close()
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    structlog.get_logger("t").warning("two", n=2)  # raised ValueError when the closed file was kept
    line = json.loads(second.getvalue())
    assert line["event"] == "two" and line["level"] == "warning" and line["n"] == 2
