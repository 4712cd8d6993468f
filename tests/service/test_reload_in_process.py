"""A reload that fails in a way no loader foresaw, on a Service built in this process.

The real-process tests (test_service.py) reload bundles that the loaders refuse with a
RetrofitError; here the loader raises something else, which only a bug can make, to show that
the running bundle is kept even then (the README's promise: a reload never stops the camera).
"""

import logging
import signal

import pytest
from helpers.agent_process import config_text

from retrofit_agent.service.daemon import Service

pytestmark = pytest.mark.device


@pytest.fixture
def service(tmp_path, tiny_bundle, synthetic_video):
    """A Service on a looping video file; the signal handlers it installs and the log level
    its config sets are put back."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    package = logging.getLogger("retrofit_agent")
    level = package.level
    config = config_text(tmp_path, tiny_bundle).replace("/dev/video-fake0", str(synthetic_video))
    config = config.replace("[capture]", "[capture]\nloop = true")
    path = tmp_path / "agent.toml"
    path.write_text(config)
    service = Service(path)
    yield service
    service.close()
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
    package.setLevel(level)


def test_an_unforeseen_failure_while_loading_keeps_the_running_bundle(service, monkeypatch, caplog):
    running = service.pipeline.bundle

    def broken(_config):
        raise RuntimeError("a bug in a loader")

    monkeypatch.setattr(service.pipeline, "load", broken)
    with caplog.at_level(logging.DEBUG, logger="retrofit_agent"):
        service._reload()
    assert service.reloads == {"failed": 1}
    assert service.pipeline.bundle is running
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == ["reload failed, keeping the running configuration"]
    assert errors[0].context == {"error": "RuntimeError: a bug in a loader"}
    assert service.runtime.run(max_frames=3).frames == 3  # and it goes on labelling
