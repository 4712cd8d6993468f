import itertools
import json
import threading

import pytest
import zmq
from helpers.observations import observation, with_labels
from helpers.zmq_sub import subscriber, wait_until_subscribed

from retrofit_agent.errors import ConfigError
from retrofit_agent.event import Event
from retrofit_agent.keep.config import KeepConfig
from retrofit_agent.keep.policy import KeepPolicy
from retrofit_agent.observation import Observation
from retrofit_agent.transport.publish import Publisher

pytestmark = pytest.mark.device


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


def test_events_are_published_under_their_own_topics(tmp_path):
    endpoint = f"ipc://{tmp_path}/pub.sock"
    publisher = Publisher(endpoint)
    ends = subscriber(endpoint, b"obs", b"event.end.weather.")  # obs: to know it is there
    wait_until_subscribed(publisher, ends)
    policy = KeepPolicy(KeepConfig(min_frames=2, end_frames=1), itertools.count(100).__next__)
    for seq, labels in enumerate([[("weather", "rain")]] * 3 + [[("users", "car")]] * 3, 1):
        decision = policy.decide(with_labels(seq, *labels), float(seq))
        for event in decision.started:
            publisher.publish_event("start", event)
        for event in decision.ended:
            publisher.publish_event("end", event)
    topic, data = ends.recv_multipart()
    assert topic == b"event.end.weather.rain"
    event = Event.model_validate_json(data)
    assert (event.seq, event.start_seq, event.end_seq, event.end_reason) == (100, 1, 3, "absent")
    ends.setsockopt(zmq.RCVTIMEO, 200)
    with pytest.raises(zmq.Again):  # starts, and the car's events, are other topics
        ends.recv_multipart()
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
