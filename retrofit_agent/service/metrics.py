"""Prometheus text exposition: on localhost HTTP (`/metrics`) and/or a node-exporter textfile.

The agent's loop renders a snapshot every few seconds on its own thread (so nothing here
touches the database or the pipeline); the HTTP thread only serves the latest snapshot, and the
textfile is replaced atomically so the collector never reads half a file.
"""

from __future__ import annotations

import http.server
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from retrofit_agent.common.files import atomic_write
from retrofit_agent.common.logs import kv
from retrofit_agent.errors import ConfigError

log = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Metric:
    """One metric family; a sample is (name suffix such as "_sum" or "", labels, value)."""

    name: str
    kind: str  # counter, gauge or summary
    help: str
    samples: list[tuple[str, Mapping[str, str], float]] = field(default_factory=list)

    @classmethod
    def single(cls, name: str, kind: str, help: str, value: float) -> Metric:
        return cls(name, kind, help, [("", {}, value)])


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    """Counters stay exact integers (no 1.23e+06); other values in full precision."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def render(metrics: Iterable[Metric]) -> str:
    lines = []
    for metric in metrics:
        lines += [f"# HELP {metric.name} {metric.help}", f"# TYPE {metric.name} {metric.kind}"]
        for suffix, labels, value in metric.samples:
            names = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
            braces = f"{{{names}}}" if names else ""
            lines.append(f"{metric.name}{suffix}{braces} {_number(value)}")
    return "\n".join(lines) + "\n"


class Exporter:
    """Holds the latest snapshot; serves it on `listen` (HOST:PORT) and writes it to `textfile`."""

    def __init__(self, listen: str = "", textfile: Path | None = None) -> None:
        self.textfile = textfile
        self._text = ""
        self._textfile_ok = True
        self._server: http.server.HTTPServer | None = None
        if textfile is not None:
            self._write_textfile(fail=True)
        if listen:
            host, _, port = listen.rpartition(":")
            try:
                self._server = http.server.HTTPServer(
                    (host.strip("[]"), int(port)), self._handler()
                )
            except OSError as exc:
                raise ConfigError(f"metrics.listen {listen}: cannot listen: {exc}") from None
            threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True).start()

    @property
    def address(self) -> tuple[str, int] | None:
        """The bound HTTP address (the port is the real one when 0 was asked for)."""
        return self._server.server_address[:2] if self._server else None  # type: ignore[return-value]

    def publish(self, text: str) -> None:
        self._text = text
        if self.textfile is not None:
            self._write_textfile(fail=False)

    def _write_textfile(self, fail: bool) -> None:
        assert self.textfile is not None
        try:  # no fsync: a snapshot every few seconds is not worth an SD card's wear
            atomic_write(self.textfile, self._text, fsync=False)
        except OSError as exc:
            if fail:
                raise ConfigError(
                    f"metrics.textfile {self.textfile}: cannot write: {exc}"
                ) from None
            if self._textfile_ok:  # once per outage, not every interval
                log.warning(
                    "cannot write metrics textfile", extra=kv(path=self.textfile, error=exc)
                )
            self._textfile_ok = False
        else:
            self._textfile_ok = True

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        exporter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 5  # a client that stalls mid-request cannot hold the thread

            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = exporter._text.encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                """Scrapes are not worth a journal line each."""

        return Handler

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
