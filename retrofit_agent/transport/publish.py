"""ZeroMQ PUB socket: every observation and label event to local subscribers, by topic.

Each observation (every frame, kept or not: its `reasons` say whether it was stored) goes out
as multipart `[topic, json, embedding]` once under topic `obs` and once under
`label.<group>.<label>` for each label it carries, so a subscriber that only wants pedestrians
subscribes to `label.road_users.pedestrian`. A label event goes out as `[topic, json]` under
`event.start.<group>.<label>` when it opens and `event.end.<group>.<label>` when it closes
(`event.` takes them all). Sends never block: PUB drops messages for a subscriber whose queue
(`send_hwm`) is full, so a slow subscriber costs nothing.
"""

from __future__ import annotations

from typing import Literal

import zmq

from retrofit_agent.errors import ConfigError
from retrofit_agent.event import Event
from retrofit_agent.observation import Observation

OBS_TOPIC = b"obs"


def label_topic(group: str, label: str) -> bytes:
    return f"label.{group}.{label}".encode()


def event_topic(kind: Literal["start", "end"], group: str, label: str) -> bytes:
    return f"event.{kind}.{group}.{label}".encode()


class Publisher:
    def __init__(self, endpoint: str, send_hwm: int = 100) -> None:
        self.endpoint = endpoint
        self._context = zmq.Context.instance()
        self._socket = self._context.socket(zmq.PUB)
        self._socket.setsockopt(zmq.SNDHWM, send_hwm)
        self._socket.setsockopt(zmq.LINGER, 0)
        try:
            self._socket.bind(endpoint)
        except zmq.ZMQError as exc:
            self._socket.close()
            raise ConfigError(f"publish endpoint {endpoint}: cannot bind: {exc}") from None
        self.sent = 0

    def publish(self, observation: Observation, header: bytes) -> None:
        """Send `observation` (with `header`, its JSON without the embedding) to every topic."""
        topics = [OBS_TOPIC] + [label_topic(s.group, s.label) for s in observation.labels]
        for topic in topics:
            self._socket.send_multipart([topic, header, observation.embedding], zmq.NOBLOCK)
        self.sent += len(topics)

    def publish_event(self, kind: Literal["start", "end"], event: Event) -> None:
        topic = event_topic(kind, event.group, event.label)
        self._socket.send_multipart([topic, event.json()], zmq.NOBLOCK)
        self.sent += 1

    def close(self) -> None:
        self._socket.close()
