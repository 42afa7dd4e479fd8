"""A fault-injecting HTTP reverse proxy for tests, in front of the local S3 server (moto).

Point s3fs at ``proxy.endpoint_url`` instead of the server's. Every request is forwarded as is, except those a
``Fault`` rule picks: the ``nth`` request (1-based, counted per rule) whose method and path match, and the
``times - 1`` matching requests after it (``times=None``: every one from the nth on), get

- ``"500"`` / ``"503"``: that status with an S3 XML error body (``InternalError`` / ``SlowDown``), not forwarded;
- ``"reset"``: the connection is reset (TCP RST) without a response; ``after_upstream=True`` forwards the request
  first, so the server did the work but the client never hears of it;
- ``"truncate"``: forwarded, the response head promises the whole body, half of it is sent, then the connection
  is reset.

``delay`` (seconds) is added to every request before it is forwarded, as a distant object store would (requests
are served on threads, so delays of concurrent requests overlap).

Each fired fault is appended to ``proxy.fired`` and every request to ``proxy.requests`` (method, path, status or
fault), so a test can assert what happened. Rules are deterministic as long as the requests a rule matches come
in a deterministic order (match one object's path, not a prefix several clients race on).
"""

from __future__ import annotations

import http.client
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

ERROR_CODES = {"500": (500, "InternalError", "We encountered an internal error. Please try again."),
               "503": (503, "SlowDown", "Please reduce your request rate.")}
FAULT_KINDS = (*ERROR_CODES, "reset", "truncate")


@dataclass
class Fault:
    """A rule: the ``nth`` request matching ``method`` and the ``path`` regex (searched in the path + query) gets
    ``kind``, and so do the next ``times - 1`` matching ones (``times=None``: all of them)."""

    method: str
    path: str
    kind: str
    nth: int = 1
    times: int | None = 1
    after_upstream: bool = False
    seen: int = 0

    def __post_init__(self):
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"Expected `kind` to be one of {FAULT_KINDS}, but got {self.kind!r}")

    def hit(self, method: str, path: str) -> bool:
        """Counts a matching request; True when it is one this rule spoils."""
        if method != self.method or not re.search(self.path, path):
            return False
        self.seen += 1
        return self.seen >= self.nth and (self.times is None or self.seen < self.nth + self.times)


class FaultyS3Proxy:
    """A threaded reverse proxy injecting ``Fault`` rules; ``start()`` / ``stop()`` or a ``with`` block."""

    def __init__(self, upstream: str, delay: float = 0.0):
        parts = urlsplit(upstream)
        self.delay = delay
        self.upstream = (parts.hostname, parts.port)
        self.faults: list[Fault] = []
        self.fired: list[tuple[str, str, str]] = []  # (method, path, kind) of every spoiled request
        self.requests: list[tuple[str, str, str]] = []  # (method, path, status or fault kind) of every request
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="faulty-s3", daemon=True)

    @property
    def endpoint_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FaultyS3Proxy":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "FaultyS3Proxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def add(self, *faults: Fault) -> None:
        with self.lock:
            self.faults.extend(faults)

    def reset(self) -> None:
        """Drops the rules and the logs."""
        with self.lock:
            self.faults.clear()
            self.fired.clear()
            self.requests.clear()

    def _pick(self, method: str, path: str) -> Fault | None:
        """The first rule spoiling this request (every rule counts it), logged as fired."""
        with self.lock:
            hits = [fault for fault in self.faults if fault.hit(method, path)]
            if hits:
                self.fired.append((method, path, hits[0].kind))
            return hits[0] if hits else None

    def _log(self, method: str, path: str, outcome: str) -> None:
        with self.lock:
            self.requests.append((method, path, outcome))


def _handler(proxy: FaultyS3Proxy):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects

        def log_message(self, *args):  # quiet
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
            connection = http.client.HTTPConnection(*proxy.upstream, timeout=60)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding", "expect")}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                return response.status, response.reason, response.getheaders(), data
            finally:
                connection.close()

        def _reset(self) -> None:
            """Closes the connection with a TCP RST, no response."""
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()

        def _handle(self) -> None:
            body = self._body()
            if proxy.delay:
                time.sleep(proxy.delay)
            fault = proxy._pick(self.command, self.path)
            kind = fault.kind if fault else None
            if kind in ERROR_CODES:
                status, code, message = ERROR_CODES[kind]
                proxy._log(self.command, self.path, kind)
                xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}'
                       f"</Message><RequestId>faulty-s3</RequestId></Error>").encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(xml)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(xml)
                return
            if kind == "reset" and not fault.after_upstream:
                proxy._log(self.command, self.path, kind)
                return self._reset()
            status, reason, headers, data = self._forward(body)
            if kind == "reset":
                proxy._log(self.command, self.path, kind)
                return self._reset()
            proxy._log(self.command, self.path, kind or str(status))
            self.send_response(status, reason)
            dropped = ("transfer-encoding", "connection", "date", "server") + (() if self.command == "HEAD" else
                                                                               ("content-length",))
            for name, value in headers:
                if name.lower() not in dropped:
                    self.send_header(name, value)
            if self.command == "HEAD":  # the object's length, without a body
                self.end_headers()
                return
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if kind == "truncate":
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                return self._reset()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    return Handler
