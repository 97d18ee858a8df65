"""A schema registry process for the outage test: the part of Confluent's REST API the daemon uses.

The Confluent Schema Registry itself is not served by this machine's registries (no `io.confluent` artifact on
Maven Central), so the outage test runs this instead: a real process on a real socket, which the daemon reaches
through confluent-kafka's `SchemaRegistryClient`, stopped with SIGKILL and started again. It answers
`GET /schemas/ids/{id}` from a JSON file of `{id: schema}` (Avro, as Confluent's registry does: 200 with
`{"schema": ...}`, 404 with error code 40403 for an unknown id), and registers schemas as
`POST /subjects/{subject}/versions` does (the same schema text gets the same id; `alerts_format: confluent`).

    python tests/registry_server.py --port 8081 --schemas schemas.json
"""

from __future__ import annotations

import argparse
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

PATH = re.compile(r"^/schemas/ids/(\d+)(?:\?.*)?$")
REGISTER = re.compile(r"^/subjects/([^/?]+)/versions(?:\?.*)?$")


def serve(port: int, schemas: dict[int, str]) -> None:
    lock = threading.Lock()
    subjects: dict[str, list[int]] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            match = REGISTER.match(self.path)
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
            if match is None or not isinstance(body.get("schema"), str):
                self._send(404 if match is None else 422, {"error_code": 42201, "message": "Invalid schema"})
                return
            with lock:
                text = body["schema"]
                schema_id = next((i for i, t in schemas.items() if t == text), None)
                if schema_id is None:
                    schema_id = max(schemas, default=0) + 1
                    schemas[schema_id] = text
                versions = subjects.setdefault(match.group(1), [])
                if schema_id not in versions:
                    versions.append(schema_id)
            self._send(200, {"id": schema_id})

        def do_GET(self) -> None:
            match = PATH.match(self.path)
            schema = schemas.get(int(match.group(1))) if match else None
            if schema is None:
                self._send(404, {"error_code": 40403, "message": "Schema not found"})
            else:
                self._send(200, {"schema": schema})

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            print(f"registry: {self.command} {self.path}", flush=True)

    ThreadingHTTPServer.allow_reuse_address = True
    with ThreadingHTTPServer(("127.0.0.1", port), Handler) as server:
        print(f"registry: listening on 127.0.0.1:{port}", flush=True)
        server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True, help="port to listen on (127.0.0.1)")
    parser.add_argument("--schemas", type=Path, required=True, help='JSON file: {"<id>": <Avro schema>, ...}')
    args = parser.parse_args()
    raw = json.loads(args.schemas.read_text())
    serve(args.port, {int(k): json.dumps(v) for k, v in raw.items()})


if __name__ == "__main__":
    main()
