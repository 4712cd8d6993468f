"""`retrofit-fleet serve`: uvicorn with several worker processes over one database.

The parent checks the database first (it opens, its schema and the partitions ahead exist,
at least one device holds a token: no device is a refusal to start, exit 78, never an open
door), binds the socket, prints `listening on URL`, then hands the socket to uvicorn's
supervisor, which starts `workers` processes and starts a new one when one dies. Each worker
builds its own app and connection pool from the settings the parent put in the environment
(`from_environment`, uvicorn's app factory), so the workers are independent and a killed one
loses only the requests it was answering: those rows were not acknowledged, and the devices
send them again. Several hosts behind a load balancer are the same thing one level up
(deploy/fleet.md).
"""

from __future__ import annotations

import logging
import os

import uvicorn
from pydantic import Field, PositiveInt
from starlette.applications import Starlette
from uvicorn.supervisors import Multiprocess

from retrofit_agent.common import logs
from retrofit_agent.common.strict import StrictModel
from retrofit_agent.errors import ConfigError
from retrofit_agent.fleet.app import OBSERVATIONS, create_app
from retrofit_agent.fleet.connections import HeaderDeadlineProtocol
from retrofit_agent.fleet.limits import Limits
from retrofit_agent.fleet.store import open_store

SETTINGS_ENV = "RETROFIT_FLEET_SERVE"

log = logging.getLogger(__name__)


class ServeSettings(StrictModel):
    database: str
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    workers: PositiveInt = 2
    max_connections: PositiveInt = 1000  # per worker; beyond it uvicorn answers 503
    cert: str | None = None
    key: str | None = None
    log_level: str = "INFO"
    limits: Limits


def from_environment() -> Starlette:
    """The app of one worker process (uvicorn factory): settings from SETTINGS_ENV."""
    settings = ServeSettings.model_validate_json(os.environ[SETTINGS_ENV])
    logs.setup(settings.log_level)
    pool = settings.limits.max_inflight + 2  # + token look-ups beside the inserts
    store = open_store(settings.database, pool_size=pool)
    return create_app(store, settings.limits, owns_store=True)


def check_database(settings: ServeSettings) -> None:
    """Create the schema and partitions ahead; ConfigError when no device could upload."""
    store = open_store(settings.database, pool_size=1)
    try:
        active = [d for d in store.devices() if d.revoked_utc is None]
        vector = getattr(store, "pgvector", False)
    finally:
        store.close()
    if not active:
        raise ConfigError(
            f"{settings.database}: no device has a token; add one first "
            "(retrofit-fleet device add ID --database URL)"
        )
    pgvector = "present, not used yet" if vector else "absent"
    log.info("database ready", extra=logs.kv(devices=len(active), pgvector=pgvector))


def serve(settings: ServeSettings) -> None:
    if bool(settings.cert) != bool(settings.key):
        raise ConfigError("--cert and --key go together")
    check_database(settings)
    os.environ[SETTINGS_ENV] = settings.model_dump_json()
    config = uvicorn.Config(
        "retrofit_agent.fleet.serve:from_environment",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        limit_concurrency=settings.max_connections,
        http=HeaderDeadlineProtocol,
        timeout_keep_alive=max(1, round(settings.limits.deadline_s)),
        access_log=False,
        log_config=None,
        ssl_certfile=settings.cert,
        ssl_keyfile=settings.key,
    )
    sock = config.bind_socket()
    sock.listen(config.backlog)  # connections wait in the backlog until a worker is up
    host, port = sock.getsockname()[:2]
    scheme = "https" if settings.cert else "http"
    print(f"listening on {scheme}://{host}:{port}{OBSERVATIONS}", flush=True)
    if settings.workers > 1:
        Multiprocess(config, sockets=[sock]).run()
    else:
        uvicorn.Server(config).run(sockets=[sock])
