"""The agent's configuration: strict pydantic models loaded from TOML plus environment overrides.

Every section forbids unknown keys, so a typo in a fleet config fails loudly at start instead of
silently falling back to a default. Errors name the file (or environment variable), the dotted
key and what is wrong, on one line.
"""

from __future__ import annotations

import datetime
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BeforeValidator,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from retrofit_agent.common.settings import load_validated
from retrofit_agent.common.strict import StrictModel
from retrofit_agent.keep.config import KeepConfig

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "default"
DEFAULT_MAX_PIXELS = 1 << 25  # 33.5 million: an 8K UHD frame (7680x4320) fits


class CaptureConfig(StrictModel):
    """Where frames come from: a V4L2 device, a video file or a directory of images."""

    source: str | int = Field(description="/dev/videoN, a device index, a video file or a folder")
    width: PositiveInt | None = None
    height: PositiveInt | None = None
    fps: PositiveFloat | None = None
    realtime: bool = Field(False, description="video files: pace at the native frame rate")
    stall_timeout_s: PositiveFloat = Field(5.0, description="no new frame for this long: lost")
    loop: bool = Field(False, description="video files: start again at the end (a stand-in camera)")
    max_pixels: int = Field(
        DEFAULT_MAX_PIXELS,
        ge=1,
        le=1 << 30,  # OpenCV's own limit
        description="a frame or image with more pixels is refused before it is decoded",
    )


class ServiceConfig(StrictModel):
    """`retrofit-agent run`: how a faulty camera is reopened, how often status is logged."""

    reconnect_initial_s: PositiveFloat = Field(0.5, description="first wait before reopening")
    reconnect_max_s: PositiveFloat = Field(30.0, description="the wait doubles up to this")
    max_corrupt_frames: PositiveInt = Field(10, description="corrupt frames in a row: reopen")
    status_interval_s: PositiveFloat = Field(300.0, description="a status line in the log")

    @model_validator(mode="after")
    def _initial_below_max(self) -> ServiceConfig:
        if self.reconnect_initial_s > self.reconnect_max_s:
            raise ValueError("reconnect_initial_s must not exceed reconnect_max_s")
        return self


class MetricsConfig(StrictModel):
    """Prometheus text format: HTTP on localhost and/or a node-exporter textfile."""

    listen: str = Field("127.0.0.1:9464", pattern=r"^(|.+:\d+)$", description="empty: off")
    textfile: Path | None = Field(None, description="e.g. .../textfile_collector/retrofit.prom")
    interval_s: PositiveFloat = Field(5.0, description="how often the snapshot is refreshed")


class LoggingConfig(StrictModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class EmbedderConfig(StrictModel):
    """onnxruntime threading: one inference thread leaves the second core to capture and I/O."""

    intra_op_threads: PositiveInt = 1
    inter_op_threads: PositiveInt = 1


class StoreConfig(StrictModel):
    """The SQLite observation queue and its bound (see retrofit_agent.store.queue for eviction)."""

    path: Path = Path("/var/lib/retrofit-agent/observations.db")
    max_rows: PositiveInt = 1_000_000
    max_bytes: PositiveInt = 2 * 1024**3
    commit_every: PositiveInt = Field(30, description="rows per transaction")
    commit_interval_s: PositiveFloat = Field(1.0, description="longest a row waits uncommitted")
    synchronous: Literal["NORMAL", "FULL", "EXTRA"] = "FULL"
    min_free_bytes: NonNegativeInt = Field(64 * 1024**2, description="never fill the disk")
    max_events: PositiveInt = Field(100_000, description="label events kept, then evicted")


class PublishConfig(StrictModel):
    """The ZeroMQ PUB socket for local subscribers."""

    enabled: bool = True
    endpoint: str = "tcp://127.0.0.1:5557"
    send_hwm: PositiveInt = Field(100, description="messages queued per subscriber, then dropped")


def _parse_window(value: Any) -> Any:
    """`"HH:MM-HH:MM"` (UTC) -> (start, end); an end before the start wraps past midnight."""
    if not isinstance(value, str):
        return value
    try:
        start, end = (datetime.time.fromisoformat(part.strip()) for part in value.split("-"))
    except ValueError:
        raise ValueError("expected HH:MM-HH:MM (UTC)") from None
    if start == end:
        raise ValueError("a window cannot end where it starts")
    return start, end


Window = Annotated[tuple[datetime.time, datetime.time], BeforeValidator(_parse_window)]
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


class UploadConfig(StrictModel):
    """The uploader (transport.upload): where to, with which credentials, how much, when."""

    endpoint: str | None = Field(None, description="https:// URL; plain http only to loopback")
    token_file: Path = Path("/etc/retrofit-agent/upload.token")
    ca_file: Path | None = Field(None, description="trust only this CA bundle (private PKI)")
    tls_verify: bool = Field(True, description="false accepts any certificate: tests only")
    timeout_s: PositiveFloat = Field(30.0, description="each connect, send and receive")
    include_embeddings: bool = Field(False, description="they are most of the bytes")
    order: Literal["oldest", "newest"] = "oldest"
    batch_rows: PositiveInt = 500
    batch_bytes: PositiveInt = Field(256 * 1024, description="compressed; bigger batches split")
    backoff_base_s: PositiveFloat = 1.0
    backoff_cap_s: PositiveFloat = 300.0
    max_bytes_per_day: PositiveInt | None = Field(None, description="request bodies, UTC day")
    max_bytes_per_s: PositiveInt | None = Field(None, description="averaged over requests")
    windows: list[Window] = Field([], description="UTC HH:MM-HH:MM; empty: any time")
    poll_interval_s: PositiveFloat = Field(30.0, description="queue empty: look again after")
    give_up_after: PositiveInt = Field(8, description="upload --once: failures in a row")

    @field_validator("endpoint")
    @classmethod
    def _https_or_loopback(cls, url: str | None) -> str | None:
        if url is None:
            return url
        parts = urlsplit(url)
        if not parts.hostname or parts.scheme not in ("http", "https"):
            raise ValueError("expected an https:// URL")
        if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
            raise ValueError("plain http only to localhost; use https://")
        return url

    @model_validator(mode="after")
    def _base_below_cap(self) -> UploadConfig:
        if self.backoff_base_s > self.backoff_cap_s:
            raise ValueError("backoff_base_s must not exceed backoff_cap_s")
        return self


class AgentConfig(StrictModel):
    device_id: str = Field(default_factory=socket.gethostname, min_length=1)
    model: Path = DEFAULT_MODEL
    labels: Path | None = Field(None, description="a labels.npz replacing the bundle's")
    capture: CaptureConfig | None = None
    service: ServiceConfig = ServiceConfig()
    metrics: MetricsConfig = MetricsConfig()
    logging: LoggingConfig = LoggingConfig()
    embedder: EmbedderConfig = EmbedderConfig()
    store: StoreConfig = StoreConfig()
    keep: KeepConfig = KeepConfig()
    publish: PublishConfig = PublishConfig()
    upload: UploadConfig = UploadConfig()


def load_config(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> AgentConfig:
    """Read `path` (TOML), apply RETROFIT_AGENT_* variables, then `overrides` (dotted keys)."""
    return load_validated(AgentConfig, path, environ, overrides)
