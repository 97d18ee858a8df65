"""A local HTTP receiver for the notify tests: records every POST (path, headers, JSON body) and answers with
the status a test chooses per path (200 unless told), optionally after a delay."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    def __init__(self, delay_s: float = 0.0) -> None:
        self.posts: list[dict[str, Any]] = []
        self.status: dict[str, list[int]] = {}  # path -> statuses to answer in turn (the last one repeats)
        self.delay_s = delay_s
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"null")
                if outer.delay_s:
                    time.sleep(outer.delay_s)
                with outer.lock:
                    queue = outer.status.get(self.path, [200])
                    status = queue.pop(0) if len(queue) > 1 else queue[0]
                    outer.posts.append({"path": self.path, "headers": dict(self.headers), "body": body,
                                        "status": status})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def received(self, path: str, status: int | None = 200) -> list[dict[str, Any]]:
        with self.lock:
            return [p for p in self.posts if p["path"] == path and (status is None or p["status"] == status)]
