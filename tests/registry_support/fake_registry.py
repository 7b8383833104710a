"""A loopback registry that answers pulls with whatever bytes a test hands it.

The real registry never sends a malformed manifest, a lying size, a redirect
loop or a truncated body; this one does, on purpose. It serves only what a
pull reads: `GET /v2/`, manifests and blobs, from a table of answers.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Answer:
    body: bytes = b""
    status: int = 200
    content_type: str = "application/octet-stream"
    headers: dict[str, str] = field(default_factory=dict)
    truncate: bool = False     # announce the full length, send half, then hang up
    redirect_loop: bool = False
    endless: bool = False      # a body with no length, sent until the client hangs up (or ENDLESS_CAP)
    stall: bool = False        # announce one byte more than the body, send the body, then send nothing


# Where an endless body stops: far past what a client that reads error bodies whole could be let off with.
ENDLESS_CAP = 64 * 1024 * 1024
# How long a stalled body waits for the client to hang up before the fake gives up on it.
STALL_CAP = 60.0


class FakeRegistry:
    def __init__(self):
        self.answers: dict[str, Answer] = {}
        self.requests: list[tuple[str, str]] = []
        self.endless_bytes_sent = 0   # of the last endless body, however far the client read it
        self.endless_done = threading.Event()
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                # Headers and body go out in two writes; without this, Nagle and delayed ACKs add 40 ms to each.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_GET(self):
                self._serve(body=True)

            def do_HEAD(self):
                self._serve(body=False)

            def _serve(self, body: bool):
                path = self.path.split("?", 1)[0]
                with fake._lock:
                    fake.requests.append((self.command, path))
                    # An answer for the path with its query (a page of a listing) wins over one for the path.
                    answer = Answer(b"{}", content_type="application/json") if path == "/v2/" \
                        else fake.answers.get(self.path) or fake.answers.get(path)
                if answer is None:
                    answer = Answer(b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}', 404,
                                    "application/json")
                if answer.redirect_loop:
                    self.send_response(307)
                    self.send_header("Location", self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                for key, value in answer.headers.items():
                    self.send_header(key, value)
                if answer.endless:
                    self._send_endless(answer.body, body)
                    return
                if answer.stall:
                    self._stall(answer.body, body)
                    return
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                if not body:
                    return
                if answer.truncate:
                    self._write(answer.body[:len(answer.body) // 2])
                    self.close_connection = True
                    return
                self._write(answer.body)

            def _write(self, data: bytes) -> bool:
                """Send data; False when the client hung up (a client may stop reading at any point)."""
                try:
                    self.wfile.write(data)
                    self.wfile.flush()
                    return True
                except OSError:
                    self.close_connection = True
                    return False

            def _stall(self, start: bytes, body: bool):
                self.send_header("Content-Length", str(len(start) + 1))
                self.end_headers()
                self.close_connection = True
                if not body:
                    return
                if not self._write(start):
                    return
                self.connection.settimeout(STALL_CAP)
                try:
                    self.connection.recv(1)   # returns when the client hangs up
                except OSError:
                    pass

            def _send_endless(self, start: bytes, body: bool):
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                sent = 0
                chunk = b" " * 65536
                try:
                    if body:
                        self.wfile.write(start)
                        while sent < ENDLESS_CAP:
                            self.wfile.write(chunk)
                            sent += len(chunk)
                except OSError:
                    pass  # the client hung up: what it was sent is counted
                with fake._lock:
                    fake.endless_bytes_sent = sent
                fake.endless_done.set()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def manifest(self, repository: str, reference: str, answer: Answer) -> None:
        with self._lock:
            self.answers[f"/v2/{repository}/manifests/{reference}"] = answer

    def blob(self, repository: str, digest: str, answer: Answer) -> None:
        with self._lock:
            self.answers[f"/v2/{repository}/blobs/{digest}"] = answer

    def reset(self) -> None:
        with self._lock:
            self.answers.clear()
            self.requests.clear()
            self.endless_done.clear()

    def start(self) -> "FakeRegistry":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "FakeRegistry":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
