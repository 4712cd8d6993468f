import json
import threading

import pytest
import zmq
from test_store import observation

from retrofit_agent.errors import ConfigError
from retrofit_agent.observation import LabelScore, Observation
from retrofit_agent.publish import Publisher

pytestmark = pytest.mark.device


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


def with_labels(seq: int, *labels: tuple[str, str]) -> Observation:
    scores = [LabelScore(group=g, label=label, score=0.9) for g, label in labels]
    return observation(seq).model_copy(update={"labels": scores})


def test_topics_parts_and_filtering(tmp_path):
    endpoint = f"ipc://{tmp_path}/pub.sock"
    publisher = Publisher(endpoint)
    everything = subscriber(endpoint, b"obs", b"label.")
    cars = subscriber(endpoint, b"label.users.car")
    wait_until_subscribed(publisher, everything, cars)

    sent = [
        with_labels(1, ("users", "car"), ("weather", "rain")),
        with_labels(2, ("weather", "rain")),
        with_labels(3, ("users", "car")),
    ]
    for obs in sent:
        publisher.publish(obs, obs.header_json())

    topics = [everything.recv_multipart()[0] for _ in range(7)]
    assert topics == [
        b"obs",
        b"label.users.car",
        b"label.weather.rain",
        b"obs",
        b"label.weather.rain",
        b"obs",
        b"label.users.car",
    ]
    received = [cars.recv_multipart() for _ in range(2)]
    for (topic, header, embedding), expected in zip(received, (sent[0], sent[2]), strict=True):
        assert topic == b"label.users.car"
        assert b'"embedding"' not in header
        assert embedding == expected.embedding
        rebuilt = Observation.model_validate({**json.loads(header), "embedding": embedding})
        assert rebuilt == expected
    cars.setsockopt(zmq.RCVTIMEO, 200)
    with pytest.raises(zmq.Again):
        cars.recv_multipart()
    publisher.close()


def test_slow_subscriber_never_blocks_the_publisher(tmp_path):
    endpoint = f"ipc://{tmp_path}/pub.sock"
    publisher = Publisher(endpoint, send_hwm=10)
    idle = subscriber(endpoint, b"")
    wait_until_subscribed(publisher, idle)
    obs = observation(1)
    done = threading.Event()

    def flood():
        for _ in range(20_000):
            publisher.publish(obs, obs.header_json())
        done.set()

    threading.Thread(target=flood, daemon=True).start()
    assert done.wait(30), "publisher blocked on a subscriber that never reads"
    queued = 0
    idle.setsockopt(zmq.RCVTIMEO, 200)
    while True:
        try:
            idle.recv_multipart()
            queued += 1
        except zmq.Again:
            break
    assert queued < 20_000  # the rest were dropped at the high-water mark, not buffered
    publisher.close()


def test_endpoint_in_use_is_a_clear_error(tmp_path):
    endpoint = f"ipc://{tmp_path}/pub.sock"
    first = Publisher("tcp://127.0.0.1:*")
    port = first._socket.getsockopt(zmq.LAST_ENDPOINT).decode().rsplit(":", 1)[1]
    with pytest.raises(ConfigError, match=f"tcp://127.0.0.1:{port}: cannot bind"):
        Publisher(f"tcp://127.0.0.1:{port}")
    first.close()
    Publisher(endpoint).close()
