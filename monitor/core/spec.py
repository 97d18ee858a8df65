"""`kind:key=value,...` texts (the simulator's incidents, the backtest's injections) read into typed arguments."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from monitor.errors import ConfigError

TEXT_KEYS = ("feature", "value")
INT_KEYS = ("start", "length")
FLOAT_KEYS = ("rate", "size", "factor")


def parse_spec(text: str, kinds: Iterable[str], what: str) -> tuple[str, dict[str, Any]]:
    """The kind and the typed arguments of `text`; a ConfigError that starts with `what` and the text for an
    unknown kind or key, or a number that is not one.

    >>> parse_spec("shift:feature=age,start=10,size=0.5", ["shift"], "incident")
    ('shift', {'feature': 'age', 'start': 10, 'size': 0.5})
    """
    names = list(kinds)
    kind, _, rest = text.partition(":")
    if kind not in names:
        raise ConfigError(f"{what} {text!r}: unknown kind {kind!r} (one of {', '.join(names)})")
    args: dict[str, Any] = {}
    for part in filter(None, rest.split(",")):
        key, _, value = part.partition("=")
        try:
            if key in TEXT_KEYS:
                args[key] = value
            elif key in INT_KEYS:
                args[key] = int(value)
            elif key in FLOAT_KEYS:
                args[key] = float(value)
            else:
                raise ConfigError(f"{what} {text!r}: unknown argument {key!r} "
                                  f"({', '.join((*TEXT_KEYS, *INT_KEYS, *FLOAT_KEYS))})")
        except ValueError as exc:
            raise ConfigError(f"{what} {text!r}: {key}={value} is not a number") from exc
    return kind, args
