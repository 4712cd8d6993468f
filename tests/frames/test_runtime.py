import json

import numpy as np
import pytest
import zmq
from helpers.zmq_sub import subscriber, wait_until_subscribed

from retrofit_agent.config import CaptureConfig, load_config
from retrofit_agent.frames.capture import open_source
from retrofit_agent.frames.pipeline import Pipeline
from retrofit_agent.frames.runtime import Runtime
from retrofit_agent.frames.stats import STAGES, Window, quantiles
from retrofit_agent.observation import Observation

pytestmark = pytest.mark.device


def drain(socket: zmq.Socket) -> list[list[bytes]]:
    messages = []
    while socket.poll(500):
        messages.append(socket.recv_multipart())
    return messages


def observe(pipeline, frame, source, seq):
    """The frame's observation, as the runtime makes it: embed, then observe."""
    timings = {}
    return pipeline.observe(frame, pipeline.embed(frame, timings), source, seq, timings)


def config_for(bundle, tmp_path, db="obs.db", **overrides):
    """The tiny bundle, a database in tmp_path, no ZeroMQ unless an endpoint is given; every
    frame stored unless a test sets the keep policy."""
    return load_config(
        None,
        environ={},
        overrides={
            "model": bundle,
            "store.path": tmp_path / db,
            "publish.enabled": "publish.endpoint" in overrides,
            "keep.every_frame": not any(key.startswith("keep.") for key in overrides),
            **overrides,
        },
    )


def test_real_footage_end_to_end(tiny_bundle, real_video, tmp_path):
    """Every frame is published; the keep policy's frames are stored, as published."""
    endpoint = f"ipc://{tmp_path}/agent.sock"
    config = config_for(
        tiny_bundle,
        tmp_path,
        device_id="cam-e2e",
        **{"publish.endpoint": endpoint, "publish.send_hwm": 10_000, "keep.every_frame": False},
    )
    with Runtime(config, CaptureConfig(source=str(real_video))) as runtime:
        everything = subscriber(endpoint, b"obs")
        top_label = subscriber(endpoint, b"label.road_users.")
        events = subscriber(endpoint, b"event.", b"obs")  # obs: to see that it is subscribed
        wait_until_subscribed(
            runtime.publisher, everything, top_label, events, probe_label=("road_users", "car")
        )
        stats = runtime.run()
        assert stats.frames == runtime.source.total == 221 and stats.dropped == 0
        stored = list(runtime.store.observations())
        stored_events = runtime.store.events.events()
        pipeline = runtime.pipeline
    published = [
        Observation.model_validate({**json.loads(header), "embedding": embedding})
        for topic, header, embedding in drain(everything)
    ]
    assert [o.frame_index for o in published] == list(range(221))
    assert len({o.seq for o in published}) == 221
    assert all(o.device_id == "cam-e2e" and o.source == str(real_video) for o in published)
    assert all(o.model.manifest_sha256 == pipeline.bundle.manifest_sha256 for o in published)

    # stored: what was published with reasons, and the events' best frames (stored when
    # their event ended, so published before with none), each exactly as published
    assert 0 < len(stored) < 221 and all(o.reasons for o in stored)
    by_seq = {o.seq: o for o in published}
    for obs in stored:
        assert obs == by_seq[obs.seq].model_copy(update={"reasons": obs.reasons})
    kept = {o.seq for o in published if o.reasons}
    assert {o.seq for o in stored if o.reasons != ["best"]} == kept
    assert {e.best_seq for e in stored_events} <= {o.seq for o in stored}
    assert stats.kept == len(stored)

    filtered = drain(top_label)
    expected = sum(1 for o in published for s in o.labels if s.group == "road_users")
    assert 0 < len(filtered) == expected < 221 * 4
    assert all(topic.startswith(b"label.road_users.") for topic, _, _ in filtered)
    topics = [m[0].decode() for m in drain(events) if m[0].startswith(b"event.")]
    assert len(topics) == 2 * len(stored_events) > 0  # a start and an end each
    assert {t for t in topics if t.startswith("event.end.")} == {
        f"event.end.{e.group}.{e.label}" for e in stored_events
    }

    # the stored embedding is the student's output for that frame, unit length
    assert np.allclose(np.linalg.norm(stored[0].embedding_array().astype(np.float32)), 1, atol=1e-2)
    summary = stats.summary()
    assert set(summary["latency_ms"]) == {*STAGES, "total"}
    assert sum(summary["labels"].values()) == sum(len(o.labels) for o in published)
    for socket in (everything, top_label, events):
        socket.close()


def test_embedding_matches_a_direct_computation(tiny_bundle, synthetic_video, tmp_path):
    config = config_for(tiny_bundle, tmp_path)
    with Runtime(config, CaptureConfig(source=str(synthetic_video))) as runtime:
        runtime.run(max_frames=5)
        stored = list(runtime.store.observations())
        pipeline = runtime.pipeline
    assert len(stored) == 5
    with open_source(synthetic_video) as source:
        frame = next(iter(source))
        direct = pipeline.embedder(pipeline.preprocess(frame.image))[0]
    np.testing.assert_allclose(
        stored[0].embedding_array().astype(np.float32), direct / np.linalg.norm(direct), atol=1e-3
    )


def test_inputs_prepared_on_the_reader_thread_give_the_same_observations(
    tiny_bundle, synthetic_video, tmp_path
):
    config = config_for(tiny_bundle, tmp_path)
    with Runtime(config, CaptureConfig(source=str(synthetic_video))) as runtime:
        stats = runtime.run()
        prepared = [(o.labels, o.embedding) for o in runtime.store.observations()]
        pipeline = runtime.pipeline
    assert stats.frames == 40 and stats.summary()["latency_ms"]["preprocess"]["p50"] > 0
    assert pipeline.inline_preprocessed == 0  # every input was made on the reader thread
    inline = []
    with open_source(synthetic_video) as source:  # no prepare: made on this thread
        for seq, frame in enumerate(source, 1):
            observation = observe(pipeline, frame, source.name, seq)
            inline.append((observation.labels, observation.embedding))
    assert pipeline.inline_preprocessed == 40
    assert inline == prepared


def test_a_reload_to_another_input_size_remakes_inputs_prepared_for_the_old_bundle(
    tiny_bundle, synthetic_video, tmp_path
):
    pytest.importorskip("onnx", reason="builds a second bundle (onnx: not on the camera)")
    from helpers.bundle_factory import build_bundle

    small = build_bundle(tmp_path / "small", size=32, name="tiny-32")
    pipeline = Pipeline(config_for(tiny_bundle, tmp_path))
    with open_source(synthetic_video, prepare=pipeline.prepare) as source:
        frames = iter(source)
        old = next(frames)  # prepared for the 64 px bundle
        assert old.prepared.input.shape == (1, 3, 64, 64)
        pipeline.load(config_for(small, tmp_path))
        remade = observe(pipeline, old, source.name, 1)
        assert pipeline.inline_preprocessed == 1
        direct = pipeline.embedder(pipeline.preprocess(old.image))[0]
        np.testing.assert_allclose(
            remade.embedding_array().astype(np.float32),
            direct / np.linalg.norm(direct),
            atol=1e-3,
        )
        later = [next(frames) for _ in range(3)][-1]  # the reader now prepares for 32 px
        assert later.prepared.input.shape == (1, 3, 32, 32)
        observe(pipeline, later, source.name, 2)
        assert pipeline.inline_preprocessed == 1


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


def test_degenerate_embeddings_are_counted_and_skipped(synthetic_video, tmp_path):
    """A zero embedding (a dead ReLU on a bright frame) made every score NaN, stored as null:
    `queue export` then crashed and the ingest server refused the rows."""
    pytest.importorskip("onnx", reason="builds a bundle (onnx: not on the camera)")
    from helpers.bundle_factory import build_bundle

    dead = build_bundle(tmp_path / "dead", dead_on_bright=True)
    with Runtime(config_for(dead, tmp_path), CaptureConfig(source=str(synthetic_video))) as rt:
        stats = rt.run()
        stored = list(rt.store.observations())
        events = [e.seq for e in rt.store.events.events()]  # label events take seqs too
    # the synthetic frames brighten by 5 levels each: the later ones are the bright ones
    assert stats.degenerate > 5 and stats.frames > 5 and stats.frames + stats.degenerate == 40
    assert [o.frame_index for o in stored] == list(range(stats.frames))
    used = sorted([o.seq for o in stored] + events)
    assert used == list(range(1, stats.frames + len(events) + 1))  # none spent on them
    scores = [s.score for o in stored for s in [*o.labels, *o.top.values()]]
    assert scores and all(np.isfinite(scores))
    assert stats.summary()["degenerate"] == stats.degenerate
