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
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return Outcome(False, False, f"unreachable: {type(reason).__name__}")
