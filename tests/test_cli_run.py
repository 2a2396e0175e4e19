"""reco-run's start-up checks (recommender.cli.run)."""

from __future__ import annotations

import socket

from recommender.cli.run import new_admin_token, port_free
from recommender.localredis import free_port


def test_a_port_with_only_time_wait_connections_is_free_and_a_listening_one_is_not():
    port = free_port()
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen()
    assert not port_free("127.0.0.1", port)
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server side closes first: its end of the connection goes to TIME_WAIT
    client.close()
    server.close()
    assert port_free("127.0.0.1", port)  # a plain bind would fail here for ~60 s


def test_generated_admin_tokens_never_start_with_a_dash():
    tokens = [new_admin_token() for _ in range(3000)]  # ~1 in 64 raw tokens starts with "-"
    assert all(len(t) == 32 and not t.startswith("-") for t in tokens)
    assert len(set(tokens)) == len(tokens)
