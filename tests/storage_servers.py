"""Real object-storage servers on loopback for tests: a GCS emulator and an S3 server.

Use from a test module with ``from storage_servers import gcs_emulator, s3_server`` (tests/ is
on sys.path); outside pytest (benchmarks) use the context managers ``gcs_emulator_server()`` and
``s3_test_server()``. Both fixtures are session-scoped and yield a dict:

* ``bucket``: a bucket that exists;
* ``url_prefix``: ``gs://<bucket>`` or ``s3://<bucket>``; put each test's objects under a
  unique key (e.g. ``f"{url_prefix}/{uuid.uuid4().hex}/store.zarr"``);
* ``storage_options``: what fsspec (gcsfs / s3fs) needs to talk to the server;
* ``endpoint``: the server's ``http://127.0.0.1:<port>``.
"""

from __future__ import annotations

import contextlib
import http.server
import logging
import os
import socket
import sys
from typing import Iterator

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import pytest  # noqa: E402

for _noisy in ("gcp_storage_emulator", "werkzeug", "moto"):
    logging.getLogger(_noisy).setLevel(logging.ERROR)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _EmulatorHTTPServer(http.server.HTTPServer):
    """The emulator's single-threaded HTTP server with two changes for tests: a listen backlog
    that holds a client's concurrent connections (the stock 5 drops SYNs, and every dropped one
    costs a TCP retransmission of about a second), and no traceback when a client closes a
    connection early (gcsfs does); every other error stays visible."""

    request_queue_size = 256

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


class _HTTPModule:
    """Stands in for ``http.server`` inside the emulator while its server thread starts."""

    HTTPServer = _EmulatorHTTPServer


#: Ports of the emulators that parse uploads byte-exactly (see :func:`_exact_multipart_reader`).
_EXACT_PORTS: set[int] = set()


def _exact_multipart_reader(stock):
    """The emulator parses uploads with the e-mail parser, which takes the CRLF before a
    boundary as part of it; gcsfs separates parts with a bare LF, so an object whose last byte
    is CR (about 1 in 256 chunks) lost it. This reader splits ``multipart/related`` uploads on
    the line ending the body itself uses, for the emulators whose port is in
    :data:`_EXACT_PORTS`; everything else goes to the emulator's own reader."""
    import json

    import gcp_storage_emulator.server as emulator

    def read(request_handler, query):
        ctype = request_handler.headers.get("Content-Type") or ""
        exact = request_handler.server.server_address[1] in _EXACT_PORTS
        if not exact or not ctype.startswith("multipart/related") or "boundary=" not in ctype:
            return stock(request_handler, query)
        raw = emulator._decode_raw_data(emulator._read_raw_data(request_handler), request_handler)
        boundary = b"--" + ctype.split("boundary=", 1)[1].split(";")[0].strip().strip('"').encode()
        nl = b"\r\n" if raw.startswith(boundary + b"\r\n") else b"\n"
        delim = nl + boundary
        meta_part, rest = raw[len(boundary + nl):].split(delim, 1)
        content_part = rest[len(nl):].rsplit(delim + b"--", 1)[0]
        content_headers, content = content_part.split(nl + nl, 1)
        content_type = "application/octet-stream"
        for line in content_headers.split(nl):
            if line.lower().startswith(b"content-type:"):
                content_type = line.split(b":", 1)[1].strip().decode()
        return {"meta": json.loads(meta_part.split(nl + nl, 1)[1]), "content": content,
                "content-type": content_type}

    read.exact_dispatch = True
    return read


@contextlib.contextmanager
def gcs_emulator_server(bucket: str = "differland-test", stock_backlog: bool = False,
                        exact_multipart: bool = True) -> Iterator[dict]:
    """gcp-storage-emulator serving in-process (in memory) on 127.0.0.1, with a bucket;
    sets STORAGE_EMULATOR_HOST while it runs. Yields the dict described above.
    ``stock_backlog``: keep the installed server's listen backlog of 5 (as users get it).
    ``exact_multipart=False``: keep the emulator's own upload parser, which drops an object's
    final byte when it is a carriage return (for the tests that show the defect is caught)."""
    import gcp_storage_emulator.server as emulator

    port = _free_port()
    server = emulator.create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket)
    # In memory, the emulator still rewrites a JSON index of every object after each write
    # (quadratic in the number of objects) for a restart that never comes: skip it.
    storage = getattr(server, "_storage", None)
    if storage is not None and hasattr(storage, "_write_config_to_file"):
        storage._write_config_to_file = lambda: None
    stock_http = emulator.server
    if not stock_backlog:
        emulator.server = _HTTPModule  # the server thread builds its HTTPServer during start()
    if not getattr(emulator._read_data, "exact_dispatch", False):  # installed once, per port
        emulator._read_data = _exact_multipart_reader(emulator._read_data)
    if exact_multipart:
        _EXACT_PORTS.add(port)
    try:
        server.start()
    finally:
        emulator.server = stock_http
    endpoint = f"http://127.0.0.1:{port}"
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = endpoint
    try:
        yield {
            "bucket": bucket,
            "url_prefix": f"gs://{bucket}",
            "endpoint": endpoint,
            "storage_options": {"token": "anon", "endpoint_url": endpoint, "project": "test"},
        }
    finally:
        server.stop()
        _EXACT_PORTS.discard(port)
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous


@contextlib.contextmanager
def s3_test_server(bucket: str = "differland-test") -> Iterator[dict]:
    """moto's S3 server (ThreadedMotoServer) on 127.0.0.1, with a bucket."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        key, secret, region = "testing", "testing", "us-east-1"
        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key,
                     aws_secret_access_key=secret, region_name=region).create_bucket(Bucket=bucket)
        yield {
            "bucket": bucket,
            "url_prefix": f"s3://{bucket}",
            "endpoint": endpoint,
            "storage_options": {"key": key, "secret": secret, "endpoint_url": endpoint,
                                "client_kwargs": {"region_name": region}},
        }
    finally:
        server.stop()


@pytest.fixture(scope="session")
def gcs_emulator():
    """The GCS emulator for the whole test session (see :func:`gcs_emulator_server`)."""
    with gcs_emulator_server() as info:
        yield info


@pytest.fixture(scope="session")
def s3_server():
    """The S3 server for the whole test session (see :func:`s3_test_server`)."""
    with s3_test_server() as info:
        yield info
