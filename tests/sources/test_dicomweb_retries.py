"""The retry policy the user sets is the only one: a DICOMweb server that keeps answering 503 (overloaded) sees
exactly the configured number of requests, and the run gives up within the policy's waits, not minutes later."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from medtl.errors import SourceUnavailableError
from medtl.sources.pull import open_remote
from medtl.sources.remote import RetryPolicy


class _Overloaded(BaseHTTPRequestHandler):
    requests_seen = 0

    def do_GET(self) -> None:
        type(self).requests_seen += 1
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:  # keep the test output clean
        pass


@pytest.fixture
def overloaded_server(monkeypatch):
    for name in ("MEDTL_PACS_USERNAME", "MEDTL_PACS_PASSWORD", "MEDTL_PACS_TOKEN", "MEDTL_PACS_CREDENTIALS"):
        monkeypatch.delenv(name, raising=False)
    _Overloaded.requests_seen = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Overloaded)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"dicomweb+http://127.0.0.1:{server.server_address[1]}/dicom-web"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("attempts", [1, 3])
def test_a_server_answering_503_gets_exactly_the_configured_tries(overloaded_server, attempts):
    source = open_remote(overloaded_server, RetryPolicy(attempts=attempts, base_delay=0.05, max_delay=0.1))
    started = time.monotonic()
    with pytest.raises(SourceUnavailableError, match=f"after {attempts} tries"):
        source.ping()
    assert _Overloaded.requests_seen == attempts
    assert time.monotonic() - started < 5  # the policy's waits (0.05 s, 0.1 s), not the client's own backoff
