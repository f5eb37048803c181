"""--metrics: the figures scraped over HTTP from a real server, checked
against the traffic the test sent; and a bad --metrics value at start."""

import subprocess
import sys
import urllib.request

import pytest
import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor, threads
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from conftest import (connect_client, server_config, start_service, stop_services,
                      subprocess_env, twistd_command, wait_until)
from helpers import Silent, node_dirs
from spchat.cluster import notices
from spchat import wire

LOOPBACK_ANY_PORT = "tcp:0:interface=127.0.0.1"


def metrics_port(service) -> int:
    return service.metrics_port.getHost().port


def get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers["Content-Type"], response.read().decode()


@pytest_twisted.inlineCallbacks
def scrape(service):
    """{(name, labels as a sorted tuple): value} of one GET /metrics (in a
    thread: the server answers on this reactor)."""
    status, kind, body = yield threads.deferToThread(
        get, f"http://127.0.0.1:{metrics_port(service)}/metrics")
    assert status == 200 and kind.startswith("text/plain; version=")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(body) for sample in family.samples}


def room_lines(client):
    return client.rec.of(wire.RoomMessage)


@pytest_twisted.inlineCallbacks
def test_scraped_counters_match_the_traffic_sent(tmp_path, pins):
    service = start_service(server_config(tmp_path / "data", metrics=LOOPBACK_ANY_PORT))
    try:
        clients = []
        for name in ("alice", "bob", "carol"):
            clients.append((yield connect_client(service, pins, name, max_retries=0)))
        alice, bob, carol = clients
        lines = {alice: 5, bob: 3}
        for client, count in lines.items():
            for i in range(count):
                client.say(f"{client.name} {i}")
        sent = sum(lines.values())
        yield wait_until(lambda: all(len(room_lines(c)) == sent for c in clients))

        figures = yield scrape(service)
        assert figures[("spchat_messages_received_total", ())] == sent
        # Every member online gets each line once; the sender's copy is its ack.
        assert figures[("spchat_messages_delivered_total", ())] == sent * len(clients)
        assert figures[("spchat_connections", (("kind", "chat"),))] == len(clients)
        assert figures[("spchat_connections", (("kind", "admin"),))] == 0
        assert figures[("spchat_sessions", (("state", "connected"),))] == len(clients)
        assert figures[("spchat_sessions", (("state", "reconnecting"),))] == 0
        batches = figures[("spchat_commit_batch_messages_count", ())]
        assert 1 <= batches <= sent
        assert figures[("spchat_commit_batch_messages_sum", ())] == sent
        assert figures[("spchat_commit_duration_seconds_count", ())] == batches
        assert figures[("spchat_commit_duration_seconds_bucket", (("le", "+Inf"),))] == batches
        for reason in ("per_ip", "full", "shed"):
            assert figures[("spchat_connections_refused_total", (("reason", reason),))] == 0
        assert figures[("spchat_relay_bytes_total", ())] == 0
        assert figures[("spchat_password_queue_depth", ())] == 0

        # A direct line: one copy to its recipient, one (the ack) to its sender.
        alice.direct("bob", "psst")
        yield wait_until(lambda: bob.rec.of(wire.DirectMessage))
        carol.proto.transport.abortConnection()  # carol's network goes away
        yield wait_until(lambda: service.core.by_key["carol"].state.value == "reconnecting")
        figures = yield scrape(service)
        assert figures[("spchat_messages_received_total", ())] == sent + 1
        assert figures[("spchat_messages_delivered_total", ())] == sent * len(clients) + 2
        assert figures[("spchat_connections", (("kind", "chat"),))] == 2
        assert figures[("spchat_sessions", (("state", "connected"),))] == 2
        assert figures[("spchat_sessions", (("state", "reconnecting"),))] == 1
    finally:
        yield stop_services(service)


@pytest_twisted.inlineCallbacks
def test_refusals_per_address_are_counted_by_each_server_of_its_own(tmp_path):
    # Two servers in one process: each its own registry and its own figures.
    strict = start_service(server_config(tmp_path / "strict", metrics=LOOPBACK_ANY_PORT,
                                         **{"max-connections-per-ip": "1"}))
    other = start_service(server_config(tmp_path / "other", metrics=LOOPBACK_ANY_PORT))
    held = []
    try:
        for _ in range(3):  # the first is held, the next two refused
            endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", strict.address.port)
            held.append((yield connectProtocol(endpoint, Silent())))
        refused = ("spchat_connections_refused_total", (("reason", "per_ip"),))
        yield wait_until(lambda: strict.factory.per_ip.refused == 2)
        assert (yield scrape(strict))[refused] == 2
        assert (yield scrape(other))[refused] == 0
        assert (yield scrape(strict))[("spchat_connections", (("kind", "chat"),))] == 1
    finally:
        for proto in held:
            proto.transport.abortConnection()
        yield stop_services(strict, other)


@pytest_twisted.inlineCallbacks
def test_bus_figures_count_lines_heard_and_notices_from_strangers(tmp_path, pins, pg_url,
                                                                  redis_server):
    a, b = (start_service(server_config(data_dir, database=pg_url, bus=redis_server.url,
                                        metrics=LOOPBACK_ANY_PORT))
            for data_dir in node_dirs(tmp_path, 2))
    # A node with a key of its own: not of this cluster, whatever it says.
    stranger = start_service(server_config(tmp_path / "stranger", database=pg_url,
                                           bus=redis_server.url))
    try:
        yield wait_until(lambda: a.bus.joined and b.bus.joined and stranger.bus.joined)
        alice = yield connect_client(a, pins, "alice")
        bob = yield connect_client(b, pins, "bob")
        for i in range(3):
            alice.say(f"line {i}")
        yield wait_until(lambda: len(room_lines(bob)) == 3)
        stranger.bus.publish(b"not a notice")
        # Sealed, but with another key: were it believed, bob's node would
        # wait for lines up to 99 that are not there.
        stranger.core.cluster.send(notices.TOPS, notices.tops({"lobby": 99}))
        yield wait_until(lambda: b.core.cluster.ignored >= 2)
        assert not b.core.cluster.order.gaps and b.core.directory.get("lobby").last_seq == 3
        figures = yield scrape(b)
        assert figures[("spchat_bus_connected", ())] == 1
        heard = figures[("spchat_bus_lag_seconds_count", ())]
        assert 1 <= heard <= 3  # a notice per batch of alice's lines
        assert figures[("spchat_bus_lag_seconds_bucket", (("le", "+Inf"),))] == heard
        assert figures[("spchat_bus_notices_dropped_total", ())] >= 2
        assert figures[("spchat_bus_backfills_total", ())] == b.core.cluster.order.reads
        # alice's node heard nothing of its own lines as lag.
        assert (yield scrape(a))[("spchat_bus_lag_seconds_count", ())] == 0
        redis_server.stop_server()
        yield wait_until(lambda: not b.bus.joined)
        assert (yield scrape(b))[("spchat_bus_connected", ())] == 0
    finally:
        yield stop_services(a, b, stranger)


def start_server(tmp_path, metrics, command=None):
    return subprocess.run(
        (command or twistd_command()) + [
            "-n", "--pidfile=", "spchat", "--host", "127.0.0.1", "--tcp-port", "0",
            "--udp-port", "0", "--data-dir", str(tmp_path / "data"), "--metrics", metrics],
        cwd=tmp_path, env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=60)


def one_error_line(result) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.mark.parametrize("value, error", [
    ("nonsense", "spchat: error: invalid --metrics='nonsense': must be an endpoint "
                 "description such as tcp:5000:interface=0.0.0.0"),
    ("tcp:notaport", "spchat: error: cannot serve metrics on 'tcp:notaport' (--metrics, "
                     "CHAT_METRICS_LISTEN): bad endpoint: "),
])
def test_a_bad_metrics_value_is_one_line_at_start(tmp_path, value, error):
    assert one_error_line(start_server(tmp_path, value)).startswith(error)


def test_metrics_without_prometheus_client_say_what_to_install(tmp_path):
    without = [sys.executable, "-c", "import sys; sys.modules['prometheus_client'] = None; "
               "from twisted.scripts.twistd import run; run()"]
    result = start_server(tmp_path, LOOPBACK_ANY_PORT, without)
    assert one_error_line(result) == (
        "spchat: error: --metrics (CHAT_METRICS_LISTEN) needs the prometheus_client package: "
        "pip install 'spchat[metrics]'")


def get_over_unix_socket(path: str, target: str) -> str:
    """The status line of one HTTP GET over a UNIX socket."""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(f"GET {target} HTTP/1.0\r\n\r\n".encode())
        return sock.makefile("rb").readline().decode().strip()


@pytest_twisted.inlineCallbacks
def test_metrics_on_a_unix_socket(tmp_path):
    """A UNIX socket is an endpoint too (a scraper on the same host, say):
    the server starts, says where it serves, and answers there."""
    path = str(tmp_path / "metrics.sock")
    service = start_service(server_config(tmp_path / "data", metrics=f"unix:{path}"))
    try:
        status = yield threads.deferToThread(get_over_unix_socket, path, "/metrics")
        assert status.split()[1] == "200"
    finally:
        yield stop_services(service)
