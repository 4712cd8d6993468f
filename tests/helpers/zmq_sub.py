"""ZeroMQ subscribers for the publish tests: SUB sockets, and waiting until PUB sees them."""

from __future__ import annotations

import zmq

from helpers.observations import with_labels
from retrofit_agent.transport.publish import Publisher


def subscriber(endpoint: str, *topics: bytes) -> zmq.Socket:
    socket = zmq.Context.instance().socket(zmq.SUB)
    socket.setsockopt(zmq.RCVTIMEO, 2000)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(endpoint)
    for topic in topics:
        socket.subscribe(topic)
    return socket


def wait_until_subscribed(
    publisher: Publisher, *sockets: zmq.Socket, probe_label: tuple[str, str] = ("users", "car")
) -> None:
    """PUB drops messages until a subscription arrives: send a probe until each SUB sees it."""
    probe = with_labels(0, probe_label)
    for socket in sockets:
        for _ in range(100):
            publisher.publish(probe, probe.header_json())
            if socket.poll(50):
                break
        else:
            raise AssertionError("subscriber never connected")
    for socket in sockets:  # drain the probes
        while socket.poll(200):
            socket.recv_multipart()
