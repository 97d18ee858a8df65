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


def test_a_line_that_cannot_be_written_is_dropped_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stderr whose reader went away (EPIPE) or that was closed: the line is dropped and counted, logging
    does not raise (it ended a stage's thread mid-batch), and lines flow again once stderr can take them."""
    from monitor.ops.logs import dropped_lines

    class Gone(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    configure_logging("info")
    before = dropped_lines()
    monkeypatch.setattr(sys, "stderr", Gone())
    structlog.get_logger("t").info("lost", n=1)
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stderr", closed)
    structlog.get_logger("t").error("lost too", n=2)
    assert dropped_lines() == before + 2
    back = io.StringIO()
    monkeypatch.setattr(sys, "stderr", back)
    structlog.get_logger("t").info("written", n=3)
    assert [json.loads(x)["event"] for x in back.getvalue().splitlines()] == ["written"]
    assert dropped_lines() == before + 2
