"""`mcast-echo mesh` against endpoints that misbehave: the body, the samples and the time it
reads are bounded, redirects are not followed, and every failure is exit 2 with one line
naming the endpoint (and a JSON document with --json); bad options are exit 64. Real HTTP
servers on this namespace's loopback stand in for hostile daemons."""

from __future__ import annotations

import http.server
import io
import json
import threading
import time
import urllib.parse
from contextlib import contextmanager, redirect_stderr

import pytest

from mcast_echo import cli
from mcast_echo.meshview import fetch
from meshtext import exposition

A, B = "127.0.0.1", "127.0.0.2"


class Handler(http.server.BaseHTTPRequestHandler):
    behaviour = "counting"
    served = 0

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        kind = self.server.behaviour  # type: ignore[attr-defined]
        if kind == "redirect":
            self.send_response(302)
            self.send_header("Location", self.server.target)  # type: ignore[attr-defined]
            self.end_headers()
            return
        if kind == "error":
            self.send_error(500, "boom")
            return
        if kind == "trickle":  # headers at once, then a byte a while: bounded by count
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            for _ in range(100):
                try:
                    self.wfile.write(b"#")
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.1)  # the trickle's pace: the stimulus under test
            return
        if kind == "prometheus":  # /api/v1/query: the same vector shape Prometheus answers
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)["query"][0]
            body = json.dumps({"status": "success", "data": {
                "resultType": "vector", "result": prometheus_vector(query)}}).encode()
        elif kind == "huge":
            body = b"# " + b"x" * (fetch.MAX_BODY + 10) + b"\n"
        elif kind == "many":
            body = "".join(f"s{i} 1\n" for i in range(fetch.MAX_SAMPLES + 1)).encode()
        else:  # a daemon whose every counter moves between scrapes
            self.server.served += 1  # type: ignore[attr-defined]
            n = 50 * self.server.served  # type: ignore[attr-defined]
            me = self.server.address  # type: ignore[attr-defined]
            peer = B if me == A else A
            body = exposition(me, n, {peer: n}, {peer: n}, 1, host=f"h-{me}").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def prometheus_vector(query: str) -> list[dict]:
    """Two daemons, 127.0.0.1 (named by its instance's address, no info series) and one whose
    instance is a name and that serves no info: its place in the matrix is unknown."""
    rows = []
    for instance in ("127.0.0.1:9101", "host-b:9101"):
        labels = {"job": "mcast-echo", "instance": instance}
        if "probes_sent" in query:
            rows.append({"metric": labels, "value": [0, "60"]})
        elif "replies" in query:
            rows.append({"metric": {**labels, "responder": "10.0.0.9"}, "value": [0, "60"]})
        elif "heard_total" in query:
            rows.append({"metric": {**labels, "prober": "10.0.0.9"}, "value": [0, "59.5"]})
    return rows


@contextmanager
def server(address: str, behaviour: str, target: str = ""):
    httpd = http.server.ThreadingHTTPServer((address, 0), Handler)
    httpd.daemon_threads = True
    httpd.behaviour, httpd.target, httpd.address, httpd.served = behaviour, target, address, 0
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{address}:{httpd.server_address[1]}/metrics"
    finally:
        httpd.shutdown()
        httpd.server_close()


def mesh(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stderr(err):
        args = cli.parse(["mesh", *argv])
        from mcast_echo.meshview import command
        status = command.run(args, out)
    return status, out.getvalue(), err.getvalue()


def test_two_daemons_that_hear_each_other_are_healthy():
    with server(A, "counting") as a, server(B, "counting") as b:
        status, out, _ = mesh("--window", "1", a, b)
    assert status == 0, out
    assert "2 hosts, 2 ordered pairs over" in out and ": 2 healthy" in out
    assert f"1 {A} (h-{A})" in out


@pytest.mark.parametrize("behaviour, why", [
    ("error", "HTTP 500"),
    ("huge", f"the body is over {fetch.MAX_BODY // 1024} KiB"),
    ("many", f"more than {fetch.MAX_SAMPLES} samples"),
    ("redirect", "HTTP 302"),
])
def test_an_endpoint_that_misbehaves_is_exit_2_naming_it(behaviour, why):
    with server(A, "counting") as good, server(B, behaviour, target=f"http://{A}:1/") as bad:
        status, out, _ = mesh("--window", "1", "--json", good, bad)
    document = json.loads(out)
    assert status == 2 and document["exit_status"] == 2 and not document["ok"]
    assert [u["source"] for u in document["unreachable"]] == [bad]
    assert why in document["unreachable"][0]["error"]


def test_a_trickling_endpoint_cannot_hold_the_command_past_its_timeout():
    with server(A, "counting") as good, server(B, "trickle") as slow:
        started = time.monotonic()
        status, out, _ = mesh("--window", "1", "--timeout", "1", good, slow)
        took = time.monotonic() - started
    assert status == 2 and f"unreachable: {slow}: timed out" in out
    assert took < 3.5, took  # one 1 s round (the slow one fails it) + margin; never 10 s


def test_a_refused_connection_is_exit_2():
    status, out, _ = mesh("--window", "1", f"http://{A}:9/metrics", f"http://{B}:9/metrics")
    assert status == 2 and out.count("unreachable:") == 2 and "refused" in out.lower()


@pytest.mark.parametrize("argv, why", [
    (["127.0.0.1:9101"], "at least two"),
    (["ftp://a/b", "127.0.0.1:1"], "only http:// and https://"),
    (["127.0.0.1:99999", "127.0.0.1:1"], "the port is not a number"),
    (["--prometheus", "http://127.0.0.1:9090", "127.0.0.1:1"], "pass one or the other"),
    (["http://u:p@127.0.0.1:1/", "127.0.0.1:1"], "no user or password"),
])
def test_bad_options_are_exit_64_with_a_json_document(argv, why):
    status, out, err = mesh("--json", *argv)
    assert status == 64 and why in err
    document = json.loads(out)
    assert document["exit_status"] == 64 and why in document["error"]


def test_an_argument_error_is_64_and_a_json_document_too(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.parse(["mesh", "--json", "--window", "0", "a:1", "b:1"])
    assert exited.value.code == 64
    assert json.loads(capsys.readouterr().out)["exit_status"] == 64


def test_prometheus_mode_places_a_daemon_by_its_info_or_instance_address_else_says_so():
    with server(A, "prometheus") as api:
        status, out, _ = mesh("--json", "--prometheus", api.rsplit("/", 1)[0])
    document = json.loads(out)
    assert status == 2 and [h["address"] for h in document["hosts"]] == [A]
    assert document["unreachable"] == [{
        "source": "mcast-echo/host-b:9101",
        "error": "no mcast_echo_mesh_info{address=...} and its instance is a name: its place "
                 "in the matrix is unknown"}]
    assert document["settings"]["window_s"] == 60.0  # --prometheus' default window
