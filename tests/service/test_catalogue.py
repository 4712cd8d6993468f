"""The metrics catalogue on its own: every family from the service's values, rendered and parsed
strictly (the service's own /metrics: test_service)."""

import dataclasses
import itertools
from collections import Counter

import pytest
from helpers.metrics import parse_metrics
from helpers.observations import observation

from retrofit_agent import __version__
from retrofit_agent.frames.stats import RunStats
from retrofit_agent.keep.config import KeepConfig
from retrofit_agent.keep.policy import KeepPolicy
from retrofit_agent.observation import ModelRef
from retrofit_agent.service.catalogue import PREFIX, QUANTILES, Values, families
from retrofit_agent.service.metrics import render

MODEL = ModelRef(name="road-v1", manifest_sha256="0123456789ab" + "f" * 52)


def distinct_values() -> Values:
    """Every field a different number, so a value under the wrong name shows."""
    return Values(**{f.name: 1000 + i for i, f in enumerate(dataclasses.fields(Values))})


def stats_of(frames: int) -> RunStats:
    stats = RunStats()
    for seq in range(1, frames + 1):
        stats.record(observation(seq), {"capture": 1.0, "inference": float(seq)})
    return stats


def test_every_family_is_declared_once_and_parses():
    metrics = families(distinct_values(), "cam-7", MODEL, {}, {}, RunStats())
    names = [m.name for m in metrics]
    assert len(names) == len(set(names)) and all(n.startswith(PREFIX) for n in names)
    assert all(m.kind in ("counter", "gauge", "summary") and m.help for m in metrics)
    parse_metrics(render(metrics))  # HELP and TYPE before every sample


def test_single_values_keep_their_names_types_and_values():
    values = distinct_values()
    text = render(families(values, "cam-7", MODEL, {}, {}, RunStats()))
    parsed = parse_metrics(text)
    for field in dataclasses.fields(Values):
        name = PREFIX + field.name
        assert parsed[name] == getattr(values, field.name), name
        assert f"# TYPE {name} {field.metadata['kind']}" in text
        assert field.metadata["kind"] == ("counter" if name.endswith("_total") else "gauge")


def test_labelled_families():
    stats = stats_of(4)
    for reasons in (["change", "novel"], ["heartbeat"], ["novel"]):
        stats.record_kept(observation(9).model_copy(update={"reasons": reasons}))
    policy = KeepPolicy(KeepConfig(min_frames=1, end_frames=1), itertools.count(100).__next__)
    started = policy.decide(observation(1), 1.0).started  # weather/rain
    stats.record_events(started, policy.close().ended)
    faults = Counter(lost=2, corrupt=1)
    reloads = Counter(ok=3)
    parsed = parse_metrics(
        render(families(distinct_values(), "cam-7", MODEL, faults, reloads, stats))
    )
    info = (
        f'{PREFIX}info{{version="{__version__}",device_id="cam-7",'
        'model="road-v1",model_sha256="0123456789ab"}'
    )
    assert parsed[info] == 1
    assert parsed[f'{PREFIX}camera_faults_total{{kind="lost"}}'] == 2
    assert parsed[f'{PREFIX}camera_faults_total{{kind="corrupt"}}'] == 1
    assert parsed[f'{PREFIX}reloads_total{{result="ok"}}'] == 3
    assert parsed[f'{PREFIX}labels_total{{group="weather",label="rain"}}'] == 4
    kept = f"{PREFIX}observations_kept_by_reason_total"
    assert [parsed[f'{kept}{{reason="{r}"}}'] for r in ("change", "heartbeat", "novel")] == [
        1,
        1,
        2,
    ]
    assert parsed[f'{PREFIX}events_started_total{{group="weather",label="rain"}}'] == 1
    assert parsed[f'{PREFIX}events_ended_total{{reason="stopped"}}'] == 1
    latency = f"{PREFIX}stage_latency_seconds"
    # inference took 1, 2, 3, 4 ms: the median 2.5 ms, the sum 10 ms, over 4 frames
    assert parsed[f'{latency}{{stage="inference",quantile="0.5"}}'] == pytest.approx(0.0025)
    assert parsed[f'{latency}_sum{{stage="inference"}}'] == pytest.approx(0.010)
    assert parsed[f'{latency}_count{{stage="inference"}}'] == 4
    quantiles = [k for k in parsed if k.startswith(f'{latency}{{stage="inference"')]
    assert len(quantiles) == len(QUANTILES)
    assert not any('stage="store"' in k for k in parsed)  # no samples: no series
