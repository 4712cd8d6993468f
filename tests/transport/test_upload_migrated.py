"""A queue written before the keep policy (schema 1), migrated on open, uploads as it is."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

from helpers.ingest_server import TOKEN, backend
from helpers.paths import TESTS

from retrofit_agent.config import UploadConfig
from retrofit_agent.fleet.limits import Limits
from retrofit_agent.fleet.sqlite_store import SqliteStore
from retrofit_agent.fleet.store import ObservationQuery
from retrofit_agent.store.queue import Store
from retrofit_agent.transport.upload import Uploader

FIXTURE = TESTS / "store" / "fixtures" / "queue-schema1.db"  # see tests/store/test_migrate.py
EVER = ObservationQuery(datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


def test_schema_1_rows_are_uploaded_as_they_were_written(tmp_path: Path):
    queue = Store(Path(shutil.copy(FIXTURE, tmp_path / "queue.db")))
    pending = {seq: json.loads(header) for seq, header, _ in queue.pending_rows(100)}
    assert len(pending) == 8 and {h["schema_version"] for h in pending.values()} == {1}
    fleet = SqliteStore(tmp_path / "fleet.db")
    token = tmp_path / "token"
    token.write_text(TOKEN)
    with backend(fleet, Limits(embedding_dim=128, max_age_days=36_500)) as server:
        config = UploadConfig(endpoint=server.url, token_file=token, include_embeddings=True)
        uploader = Uploader(config, queue)
        stats = uploader.drain(once=True)
        uploader.close()
    assert (stats.uploaded, stats.quarantined) == (8, 0)
    received = {json.loads(h)["seq"]: json.loads(h) for _, h in fleet.observations(EVER)}
    # as written (schema 1); the server stores what it validated, so `reasons` is the empty
    # list a schema 1 row is read with
    assert received == {seq: {**header, "reasons": []} for seq, header in pending.items()}
    queue.close()
    fleet.close()
