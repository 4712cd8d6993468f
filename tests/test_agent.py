import json

import numpy as np
import pytest
import zmq
from test_publish import subscriber, wait_until_subscribed

from retrofit_agent.agent import STAGES, Pipeline, Window, quantiles, run
from retrofit_agent.capture import open_source
from retrofit_agent.config import load_config
from retrofit_agent.observation import Observation
from retrofit_agent.publish import Publisher
from retrofit_agent.store import Store

pytestmark = pytest.mark.device


def drain(socket: zmq.Socket) -> list[list[bytes]]:
    messages = []
    while socket.poll(500):
        messages.append(socket.recv_multipart())
    return messages


def test_real_footage_end_to_end(tiny_bundle, real_video, tmp_path):
    config = load_config(None, environ={}, overrides={"model": tiny_bundle, "device_id": "cam-e2e"})
    pipeline = Pipeline(config)
    endpoint = f"ipc://{tmp_path}/agent.sock"
    publisher = Publisher(endpoint, send_hwm=10_000)
    everything = subscriber(endpoint, b"obs")
    top_label = subscriber(endpoint, b"label.road_users.")
    wait_until_subscribed(publisher, everything, top_label, probe_label=("road_users", "car"))

    store = Store(tmp_path / "obs.db")
    with open_source(real_video) as source:
        stats = run(pipeline, source, store, publisher)

    assert stats.frames == source.total == 221 and stats.dropped == 0
    stored = list(store.observations())
    assert [o.frame_index for o in stored] == list(range(221))
    assert len({o.seq for o in stored}) == 221
    assert all(o.device_id == "cam-e2e" and o.source == str(real_video) for o in stored)
    assert all(o.model.manifest_sha256 == pipeline.bundle.manifest_sha256 for o in stored)

    published = drain(everything)
    assert [m[0] for m in published] == [b"obs"] * 221
    by_seq = {o.seq: o for o in stored}
    for _, header, embedding in published:
        obs = Observation.model_validate({**json.loads(header), "embedding": embedding})
        assert obs == by_seq[obs.seq]  # same labels, scores and float16 embedding bytes

    filtered = drain(top_label)
    expected = sum(1 for o in stored for s in o.labels if s.group == "road_users")
    assert 0 < len(filtered) == expected < 221 * 4
    assert all(topic.startswith(b"label.road_users.") for topic, _, _ in filtered)

    # the stored embedding is the student's output for that frame, unit length
    assert np.allclose(np.linalg.norm(stored[0].embedding_array().astype(np.float32)), 1, atol=1e-2)
    summary = stats.summary()
    assert set(summary["latency_ms"]) == {*STAGES, "total"}
    assert sum(summary["labels"].values()) == sum(len(o.labels) for o in stored)
    store.close()
    publisher.close()


def test_embedding_matches_a_direct_computation(tiny_bundle, synthetic_video, tmp_path):
    pipeline = Pipeline(load_config(None, environ={}, overrides={"model": tiny_bundle}))
    store = Store(tmp_path / "obs.db")
    with open_source(synthetic_video) as source:
        run(pipeline, source, store, max_frames=5)
    stored = list(store.observations())
    assert len(stored) == 5
    with open_source(synthetic_video) as source:
        frame = next(iter(source))
        direct = pipeline.embedder(pipeline.preprocess(frame.image))[0]
    np.testing.assert_allclose(
        stored[0].embedding_array().astype(np.float32), direct / np.linalg.norm(direct), atol=1e-3
    )
    store.close()


def test_inputs_prepared_on_the_reader_thread_give_the_same_observations(
    tiny_bundle, synthetic_video, tmp_path
):
    pipeline = Pipeline(load_config(None, environ={}, overrides={"model": tiny_bundle}))
    stored = {}
    for prepare in (None, pipeline.preprocess.prepare):
        store = Store(tmp_path / f"{prepare is None}.db")
        with open_source(synthetic_video, prepare=prepare) as source:
            stats = run(pipeline, source, store)
        stored[prepare is None] = [(o.labels, o.embedding) for o in store.observations()]
        assert stats.frames == 40 and stats.summary()["latency_ms"]["preprocess"]["p50"] > 0
        store.close()
    assert stored[True] == stored[False]


def test_latency_window_keeps_the_last_values_in_fixed_memory():
    window = Window(size=4)
    assert len(window) == 0 and window.values().size == 0
    for value in range(10):
        window.append(value)
    assert len(window) == 4
    assert sorted(window.values()) == [6, 7, 8, 9]


@pytest.mark.parametrize("count", [1, 2, 7, 221])
def test_quantiles_match_numpy(count):
    values = np.random.default_rng(count).exponential(size=count)
    qs = (0.5, 0.9, 0.99)
    np.testing.assert_allclose(quantiles(values, qs), np.quantile(values, qs), rtol=1e-12)
