"""A fault-injecting HTTP proxy for tests: object storage as it really behaves.

``FaultProxy(upstream)`` listens on 127.0.0.1 and forwards every request to a storage server
(the GCS emulator or the S3 server of :mod:`storage_servers`). A :class:`Faults` plan makes some
requests fail the ways object storage fails:

* ``"503"`` / ``"429"``: answered by the proxy (the request never reaches the server), with the
  error body GCS (JSON) or S3 (XML ``SlowDown``) sends;
* ``"drop"``: forwarded (the server may have done the write), then the connection is closed
  without a response;
* ``"truncate"``: forwarded, then the response headers (full ``Content-Length``) and half of
  the body are sent and the connection closed mid-body;
* ``latency_s``: every request waits this long before it is forwarded;
* ``max_in_flight``: a request that arrives while that many are being served is answered 429
  (``"throttled"``), as a bucket throttles load: a client that keeps many requests in flight
  sees more of them.

Which request fails is decided from a hash of (seed, method, object, how many requests for
that method and object came before), never from arrival order: the same seed gives every
object the same sequence of faults however the client's concurrent requests interleave, so a
run is deterministic. ``always`` names objects (substrings) that fail with 503 every time - a
fault that does not go away. ``requests`` counts the requests per (method, object), ``injected``
the faults per kind.
"""

from __future__ import annotations

import hashlib
import http.client
import http.server
import json
import re
import socket
import socketserver
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator
from urllib.parse import unquote, urlsplit

#: Headers that belong to one connection, not to the request or response.
_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "trailer",
        "upgrade", "content-length", "expect"}
_GCS_UPLOAD_NAME = re.compile(rb'"name":\s*"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Faults:
    """Probabilities per request of each fault kind (they add up to at most 1), the latency
    added to every request (s), the seed, and objects that always fail (substrings)."""

    p_503: float = 0.0
    p_429: float = 0.0
    p_drop: float = 0.0
    p_truncate: float = 0.0
    latency_s: float = 0.0
    seed: int = 0
    always: tuple[str, ...] = field(default_factory=tuple)
    max_in_flight: int = 0

    def decide(self, method: str, obj: str, n: int) -> str | None:
        """The fault for the ``n``-th (0-based) ``method`` request of ``obj``, or None."""
        if any(a in obj for a in self.always):
            return "503"
        h = hashlib.sha256(f"{self.seed}|{method}|{obj}|{n}".encode()).digest()
        u = int.from_bytes(h[:8], "little") / 2.0 ** 64
        for kind, p in (("503", self.p_503), ("429", self.p_429), ("drop", self.p_drop),
                        ("truncate", self.p_truncate)):
            if u < p:
                return kind
            u -= p
        return None


def object_of(method: str, target: str, body: bytes) -> str:
    """``bucket/key`` a request is about (GCS JSON API or S3 path style), or the request
    target without its query for other requests (listings, bucket calls)."""
    parts = urlsplit(target)
    path = unquote(parts.path)
    m = re.match(r"^/(?:download/|upload/)?storage/v1/b/([^/]+)/o(?:/(.+))?$", path)
    if m:
        bucket, key = m.group(1), m.group(2)
        if key is None and method == "POST" and path.startswith("/upload/"):
            found = _GCS_UPLOAD_NAME.search(body[:4096])
            key = json.loads(b'"' + found.group(1) + b'"') if found else None
        if key is None:  # a listing: keep the query (prefix, delimiter, page), it names it
            return f"{bucket}/?{parts.query}"
        return f"{bucket}/{key}"
    return path.lstrip("/") + (f"?{parts.query}" if method == "GET" and parts.query else "")


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # a response carries Content-Length; we close after each

    def log_message(self, *args):  # quiet
        pass

    def _body(self) -> bytes:
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
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _handle(self):
        proxy: FaultProxy = self.server.proxy  # type: ignore[attr-defined]
        body = self._body()
        obj = object_of(self.command, self.path, body)
        fault = proxy.count(self.command, obj)
        self.close_connection = True
        if fault is None and not proxy.enter():
            return self._error(429, proxy.flavour)
        try:
            if proxy.faults.latency_s:
                time.sleep(proxy.faults.latency_s)
            if fault in ("503", "429"):
                return self._error(int(fault), proxy.flavour)
            return self._serve(proxy, fault, body)
        finally:
            if fault is None:
                proxy.leave()

    def _serve(self, proxy, fault, body):
        status, reason, headers, data = proxy.forward(self.command, self.path, self.headers, body)
        if fault == "drop" or (fault == "truncate" and len(data) < 2):
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(status, reason)
        length = str(len(data))
        for k, v in headers:
            if k.lower() not in _HOP:
                self.send_header(k, v)
            elif k.lower() == "content-length" and self.command == "HEAD":
                length = v  # the object's size, not the (empty) body's
        self.send_header("Content-Length", length)
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        if fault == "truncate":
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(data)

    def _error(self, code: int, flavour: str):
        if flavour == "s3":
            s3_code = "SlowDown" if code == 503 else "TooManyRequests"
            data = (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{s3_code}</Code>"
                    f"<Message>Please reduce your request rate (injected {code})</Message>"
                    "</Error>").encode()
            ctype = "application/xml"
        else:
            data = json.dumps({"error": {"code": code, "message": f"injected {code}"}}).encode()
            ctype = "application/json"
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _handle


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def handle_error(self, request, client_address):  # a client that went away: not news
        pass


class FaultProxy:
    """The proxy (see the module docstring): ``url`` to give clients, ``faults`` (replace it
    at any time), ``requests`` and ``injected`` counters, ``close()``."""

    def __init__(self, upstream: str, faults: Faults | None = None, flavour: str = "gcs"):
        u = urlsplit(upstream)
        self.upstream = (u.hostname, u.port)
        self.faults = faults or Faults()
        self.flavour = flavour
        self.requests: Counter = Counter()
        self.injected: Counter = Counter()
        self.in_flight = 0
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="fault-proxy")
        self._thread.start()

    def count(self, method: str, obj: str) -> str | None:
        with self._lock:
            n = self.requests[(method, obj)]
            self.requests[(method, obj)] += 1
            fault = self.faults.decide(method, obj, n)
            if fault:
                self.injected[fault] += 1
        return fault

    def enter(self) -> bool:
        """Take a place among the requests in flight; False (counted ``"throttled"``) when
        ``faults.max_in_flight`` are already there."""
        with self._lock:
            limit = self.faults.max_in_flight
            if limit and self.in_flight >= limit:
                self.injected["throttled"] += 1
                return False
            self.in_flight += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def forward(self, method, target, headers, body):
        conn = http.client.HTTPConnection(*self.upstream, timeout=120)
        try:
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for k, v in headers.items():
                if k.lower() not in _HOP:
                    conn.putheader(k, v)
            if body or method in ("POST", "PUT", "PATCH"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.reason, resp.getheaders(), data
        finally:
            conn.close()

    def requests_for(self, substring: str) -> int:
        """Requests so far whose object contains ``substring``."""
        with self._lock:
            return sum(n for (_, obj), n in self.requests.items() if substring in obj)

    def reset(self, faults: Faults | None = None) -> None:
        with self._lock:
            self.requests.clear()
            self.injected.clear()
            if faults is not None:
                self.faults = faults

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def proxied(info: dict, proxy: FaultProxy) -> dict:
    """A storage server's fixture dict (see :mod:`storage_servers`) with its endpoint replaced
    by the proxy's."""
    options = dict(info["storage_options"], endpoint_url=proxy.url)
    return {**info, "endpoint": proxy.url, "storage_options": options}


def faults_through(info: dict, faults: Faults, flavour: str = "gcs") -> Iterator:
    """Context manager: (proxy, the server's dict as seen through it)."""
    import contextlib

    @contextlib.contextmanager
    def run():
        with FaultProxy(info["endpoint"], faults, flavour) as proxy:
            yield proxy, proxied(info, proxy)

    return run()
