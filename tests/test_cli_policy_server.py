"""`toolgym eval` with an HTTP policy says so when nothing answers at the URL, instead of scoring zeros."""

import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import typer
from typer.testing import CliRunner

from toolgym.cli import app, check_server


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_eval_against_an_unreachable_server_fails_with_a_message():
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    result = CliRunner().invoke(app, ["eval", "--policy", url, "--model", "m", "--n", "1", "--k", "1"])
    assert result.exit_code == 1
    assert f"cannot reach the policy server at {url}" in result.output


class _NotFound(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_any_http_reply_counts_as_reachable():
    server = HTTPServer(("127.0.0.1", 0), _NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        check_server(f"http://127.0.0.1:{server.server_address[1]}/v1")
    except typer.Exit:
        pytest.fail("a server that answers 404 on /models is reachable")
    finally:
        server.shutdown()
        server.server_close()
