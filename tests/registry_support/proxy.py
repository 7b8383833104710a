"""A loopback HTTP proxy in front of a real registry that counts and breaks requests.

It forwards every request unchanged (the Host header too, so the registry's
`Location` headers point back at the proxy), records method, path, status and
body sizes, and applies faults: on the Nth request matching a rule it either
drops the connection halfway through the request body, or answers 500 (or 429)
without forwarding. Faults are the one thing a real registry cannot be made to do on cue.
"""

from __future__ import annotations

import http.client
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate"}


@dataclass
class Fault:
    method: str                 # e.g. "PUT", "PATCH", "POST"
    path: str                   # a regex searched in the request path
    action: str                 # "drop", "500", "429" (with Retry-After: 1), "corrupt" (first byte flipped),
                                # or "stall" (hold the request `stall_seconds` after its body, then forward it)
    nth: int = 1                # the first matching request that fails
    times: int = 1              # how many matching requests in a row fail (0: all from nth on)
    seen: int = 0

    def hit(self, method: str, path: str) -> bool:
        if method != self.method or not re.search(self.path, path):
            return False
        self.seen += 1
        if self.seen < self.nth:
            return False
        return self.times == 0 or self.seen < self.nth + self.times


@dataclass
class Exchange:
    method: str
    path: str
    status: int | None
    sent: int                   # request body bytes the client sent
    received: int               # response body bytes the client got
    fault: str | None = None


@dataclass
class Log:
    exchanges: list[Exchange] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, exchange: Exchange) -> None:
        with self.lock:
            self.exchanges.append(exchange)

    def clear(self) -> None:
        with self.lock:
            self.exchanges.clear()

    def matching(self, method: str | None = None, path: str = "") -> list[Exchange]:
        with self.lock:
            return [e for e in self.exchanges
                    if (method is None or e.method == method) and re.search(path, e.path)]

    @property
    def requests(self) -> int:
        return len(self.exchanges)

    @property
    def bytes_sent(self) -> int:
        return sum(e.sent for e in self.exchanges)

    @property
    def bytes_received(self) -> int:
        return sum(e.received for e in self.exchanges)

    def blob_uploads(self) -> list[Exchange]:
        """Requests that carried blob bytes or started/mounted a blob upload."""
        return [e for e in self.exchanges if "/blobs/uploads/" in e.path and e.method in ("POST", "PATCH", "PUT")]


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up on a kept-alive connection (as a command does when it exits) is normal
    here, not an error worth a traceback on the bench's or the test's output."""

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


class FaultProxy:
    def __init__(self, upstream: str, port: int = 0):
        self.upstream_host, _, upstream_port = upstream.partition(":")
        self.upstream_port = int(upstream_port or 80)
        self.log = Log()
        self.faults: list[Fault] = []
        self._faults_lock = threading.Lock()
        # Blob uploads under way at once, and the most seen; `upload_delay` holds each one open a while.
        self.upload_delay = 0.0
        self.uploads_in_flight = 0
        self.max_uploads_in_flight = 0
        self.stall_seconds = 30.0
        # (time.monotonic(), method, path) of every request as it arrives, before its body is read.
        self.arrivals: list[tuple[float, str, str]] = []
        self.stalled = threading.Event()   # set when a request starts being held by a "stall" fault
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def _read_body(self, limit: int | None = None) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = bytearray()
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return bytes(out)
                        out += self.rfile.read(size)
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length if limit is None else min(limit, length))

            def _handle(self):
                method, path = self.command, self.path
                with proxy._faults_lock:
                    proxy.arrivals.append((time.monotonic(), method, path))
                with proxy._faults_lock:
                    fault = next((f for f in proxy.faults if f.hit(method, path)), None)
                if fault and fault.action == "drop":
                    length = int(self.headers.get("Content-Length") or 0)
                    part = self._read_body(limit=length // 2)
                    proxy.log.add(Exchange(method, path, None, len(part), 0, "drop"))
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                body = self._read_body()
                if fault and fault.action == "stall":
                    proxy.stalled.set()
                    time.sleep(proxy.stall_seconds)
                uploading = method in ("PUT", "PATCH") and "/blobs/uploads/" in path
                if uploading:
                    with proxy._faults_lock:
                        proxy.uploads_in_flight += 1
                        proxy.max_uploads_in_flight = max(proxy.max_uploads_in_flight, proxy.uploads_in_flight)
                    time.sleep(proxy.upload_delay)
                try:
                    self._answer(method, path, body, fault)
                finally:
                    if uploading:
                        with proxy._faults_lock:
                            proxy.uploads_in_flight -= 1

            def _answer(self, method, path, body, fault):
                if fault and fault.action in ("500", "429"):
                    code = "TOOMANYREQUESTS" if fault.action == "429" else "UNKNOWN"
                    payload = b'{"errors":[{"code":"%s","message":"injected failure"}]}' % code.encode()
                    proxy.log.add(Exchange(method, path, int(fault.action), len(body), len(payload), fault.action))
                    self.send_response(int(fault.action))
                    if fault.action == "429":
                        self.send_header("Retry-After", "1")
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                # A list, not a dict: clients send several Accept headers and all must reach the registry.
                headers = [(k, v) for k, v in self.headers.items()
                           if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"]
                if body or method in ("PUT", "POST", "PATCH"):
                    headers.append(("Content-Length", str(len(body))))
                upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=120)
                try:
                    upstream.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
                    for key, value in headers:
                        upstream.putheader(key, value)
                    upstream.endheaders(body or None)
                    response = upstream.getresponse()
                    payload = response.read()
                    if fault and fault.action == "corrupt" and payload:
                        payload = bytes([payload[0] ^ 0xFF]) + payload[1:]
                    # Logged before the client has its answer, so a client reading the log right after
                    # its last request finds that request there.
                    proxy.log.add(Exchange(method, path, response.status, len(body),
                                           0 if method == "HEAD" else len(payload)))
                    self.send_response(response.status, response.reason)
                    for key, value in response.getheaders():
                        if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                            self.send_header(key, value)
                    length = response.getheader("Content-Length") if method == "HEAD" else str(len(payload))
                    self.send_header("Content-Length", length or "0")
                    self.end_headers()
                    if method != "HEAD":
                        self.wfile.write(payload)
                finally:
                    upstream.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

        self.server = _QuietServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.address = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> "FaultProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add_fault(self, fault: Fault) -> Fault:
        with self._faults_lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._faults_lock:
            self.faults.clear()

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
