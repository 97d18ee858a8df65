"""Posting JSON to a receiver over HTTP (Alertmanager's v2 API, a webhook), classified for retrying.

Nothing here logs a URL (a Slack incoming webhook's URL is its secret) or a body.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

# Refusals worth retrying: the receiver is busy or asks for time; any other 4xx is for good.
RETRYABLE_4XX = {408, 425, 429}


@dataclass(frozen=True, slots=True)
class Outcome:
    """A delivery attempt: accepted, refused for good (`permanent`), or worth retrying."""

    ok: bool
    permanent: bool = False
    detail: str = ""
    status: int | None = None
    stopped: bool = False  # given up because the process is stopping (the caller does not commit it)
    # The request may have reached the receiver (no answer came: a timeout or a dropped connection after it
    # was sent); False when it answered, or when no connection was made.
    maybe_delivered: bool = False


def post_json(url: str, body: Any, headers: dict[str, str], timeout: float) -> Outcome:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return Outcome(True, status=response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
        permanent = 400 <= status < 500 and status not in RETRYABLE_4XX
        return Outcome(False, permanent, f"HTTP {status}", status)
    except urllib.error.URLError as exc:  # no connection (refused, no route, name, connect timeout)
        return Outcome(False, False, f"unreachable: {type(exc.reason).__name__}")
    except OSError as exc:  # sent, but no answer: a read timeout, the connection dropped
        return Outcome(False, False, f"no answer: {type(exc).__name__}", maybe_delivered=True)
