"""The fleet app whose store, once a batch is committed, never lets the answer go out.

    python tests/helpers/held_server.py DATABASE_URL MARKER

Prints `listening on URL` like `retrofit-fleet serve`; after the first committed batch it
writes the number of new rows to MARKER and blocks, so a test can kill the process between
the commit and the answer (the ack-after-commit rule).
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import uvicorn

from retrofit_agent.fleet.app import OBSERVATIONS, create_app
from retrofit_agent.fleet.limits import Limits
from retrofit_agent.fleet.store import FleetStore, StoredRow, open_store


def holding(store: FleetStore, marker: Path, release: threading.Event) -> FleetStore:
    """`store`, whose every commit writes its new-row count to `marker`, then waits for
    `release` before the answer can be built."""
    commit = store.store_rows

    def store_rows(batch_id: str, rows: list[StoredRow]) -> int:
        new = commit(batch_id, rows)
        marker.write_text(str(new))
        release.wait()
        return new

    store.store_rows = store_rows  # type: ignore[method-assign]
    return store


def main(url: str, marker: str) -> None:
    store = holding(open_store(url), Path(marker), threading.Event())  # released by SIGKILL
    limits = Limits(embedding_dim=32, max_age_days=36_500)
    config = uvicorn.Config(create_app(store, limits), host="127.0.0.1", log_config=None)
    sock = config.bind_socket()
    sock.listen(config.backlog)
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}{OBSERVATIONS}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main(*sys.argv[1:])
