"""`retrofit-agent bench`: a real run on the tiny bundle, its JSON holding real measurements."""

import json
import math

from helpers.cli import agent, error_line


def test_bench_json_holds_real_numbers(tiny_bundle, synthetic_video):
    options = ["--rounds", "2", "--runs", "5", "--json"]
    result = agent(
        "bench", "--model", tiny_bundle, "--video", synthetic_video, *options, check_ok=True
    )
    report = json.loads(result.stdout)
    assert report["model"]["name"] == "tiny-test"
    assert report["bare_model"]["runs"] == 10
    latency = report["bare_model"]["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"]
    assert report["pipeline"]["frames"] == 2 * 40  # the synthetic video, twice
    stages = report["pipeline"]["latency_ms"]
    assert {"preprocess", "inference", "scoring", "store", "publish"} <= stages.keys()
    bare, pipeline = report["bare_model"], report["pipeline"]
    numbers = [
        bare["fps"],
        bare["cpu_ms_per_frame"],
        pipeline["fps"],
        pipeline["inference_thread_cpu_ms_per_frame"],
        pipeline["all_threads_cpu_ms_per_frame"],
        report["pipeline_vs_bare_cpu"],
        report["peak_rss_mib"],
    ]
    assert all(math.isfinite(n) and n > 0 for n in numbers)
    assert len(report["per_round"]) == 2
    assert report["pipeline_vs_bare"] > 0


def test_bench_text_report(tiny_bundle, synthetic_video):
    result = agent(
        "--model",
        tiny_bundle,
        "bench",
        "--video",
        synthetic_video,
        "--rounds",
        1,
        "--runs",
        3,
        check_ok=True,
    )
    assert "tiny-test" in result.stdout  # --model before the command counts too
    assert "% of the bare model" in result.stdout and "peak RSS" in result.stdout


def test_bench_needs_a_readable_video(tiny_bundle, tmp_path):
    result = agent("bench", "--model", tiny_bundle, "--video", tmp_path / "absent.mp4")
    assert result.returncode == 66
    assert "absent.mp4: no such file or directory" in error_line(result)
    assert agent("bench", "--runs", 0).returncode == 2
