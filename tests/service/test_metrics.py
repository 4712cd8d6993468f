import socket
import urllib.error
import urllib.request

import pytest
from helpers.metrics import parse_metrics

from retrofit_agent.errors import ConfigError
from retrofit_agent.service.metrics import Exporter, Metric, render

METRICS = [
    Metric.single("agent_frames_total", "counter", "Frames processed.", 1234567),
    Metric("agent_latency_seconds", "summary", "Stage latency.", [
        ("", {"stage": "inference", "quantile": "0.5"}, 0.0125),
        ("_sum", {"stage": "inference"}, 12.5),
        ("_count", {"stage": "inference"}, 1000),
    ]),
    Metric("agent_info", "gauge", "Build.", [("", {"model": 'odd "name"\\x'}, 1)]),
]  # fmt: skip


def test_text_format():
    text = render(METRICS)
    assert text.splitlines()[:3] == [
        "# HELP agent_frames_total Frames processed.",
        "# TYPE agent_frames_total counter",
        "agent_frames_total 1234567",  # exact, not 1.23457e+06
    ]
    values = parse_metrics(text)
    assert values['agent_latency_seconds{stage="inference",quantile="0.5"}'] == 0.0125
    assert values['agent_latency_seconds_count{stage="inference"}'] == 1000
    assert 'agent_info{model="odd \\"name\\"\\\\x"} 1' in text
    assert text.endswith("\n")


def test_http_serves_the_latest_snapshot():
    exporter = Exporter("127.0.0.1:0")
    try:
        host, port = exporter.address
        exporter.publish(render(METRICS[:1]))
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert parse_metrics(response.read().decode()) == {"agent_frames_total": 1234567}
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(f"http://{host}:{port}/other", timeout=5)
    finally:
        exporter.close()


def test_port_in_use_is_a_config_error():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        with pytest.raises(ConfigError, match=r"metrics.listen 127.0.0.1:\d+: cannot listen"):
            Exporter(f"127.0.0.1:{taken.getsockname()[1]}")
    finally:
        taken.close()


def test_textfile_is_replaced_whole(tmp_path):
    path = tmp_path / "retrofit_agent.prom"
    exporter = Exporter(textfile=path)
    assert path.read_text() == ""
    exporter.publish(render(METRICS))
    assert parse_metrics(path.read_text())["agent_frames_total"] == 1234567
    assert [p.name for p in tmp_path.iterdir()] == ["retrofit_agent.prom"]  # no temporary left


def test_textfile_problems(tmp_path, caplog):
    with pytest.raises(ConfigError, match="metrics.textfile .*absent/m.prom: cannot write"):
        Exporter(textfile=tmp_path / "absent" / "m.prom")
    directory = tmp_path / "collector"
    directory.mkdir()
    exporter = Exporter(textfile=directory / "m.prom")
    (directory / "m.prom").unlink()
    directory.rmdir()  # the collector directory vanishes while the agent runs
    for _ in range(3):
        exporter.publish(render(METRICS))  # never raises
    assert [r.message for r in caplog.records] == ["cannot write metrics textfile"]  # once
    directory.mkdir()
    exporter.publish(render(METRICS))
    assert parse_metrics((directory / "m.prom").read_text())["agent_frames_total"] == 1234567
