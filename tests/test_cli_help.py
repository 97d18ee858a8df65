"""Issue 11 #21: every option of every command says what it does in --help."""

from __future__ import annotations

import argparse

from monitor.cli.main import _parser


def _parsers(parser: argparse.ArgumentParser, path: str = "model-monitor"
             ) -> list[tuple[str, argparse.ArgumentParser]]:
    out = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _parsers(sub, f"{path} {name}")
    return out


def test_every_option_has_help() -> None:
    missing = [f"{path} {'/'.join(a.option_strings)}"
               for path, parser in _parsers(_parser())
               for a in parser._actions
               if a.option_strings and not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()]
    assert missing == []


def test_every_command_has_help() -> None:
    for _path, parser in _parsers(_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                assert all(c.help for c in action._choices_actions), [c.dest for c in action._choices_actions]


def test_status_starts_without_the_numeric_stack() -> None:
    """Issue 11 #17: `status` took 10-18 s a call on a 2-core machine; most of a call was importing scipy (through
    the stage-1 core, for one constant) before reading a few Redis hashes. The status path imports neither
    scipy nor numba now (the cause, checked directly; the time itself is not a test's business)."""
    import subprocess
    import sys

    code = ("import sys, monitor.cli.main, monitor.ops.status, monitor.io.redis_store; "
            "print(sorted(m for m in ('scipy', 'numba', 'river') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stdout
