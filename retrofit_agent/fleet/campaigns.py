"""Campaign documents as the server distributes them: opaque JSON, named by their sha256.

The campaign format belongs to the campaigns issue (18, not built yet). Until then a campaign
is any JSON object an operator added (`retrofit-fleet campaign add FILE`), stored as the bytes
of the file and served as they are by `GET /v1/campaigns`. Issue 18 plugs its validation into
`read_document` (the one place a document enters) and its typed model into the answer.

The answer's ETag is the sha256 of the stored documents' hashes in order, so it changes when
a document is added or removed and a device polling with `If-None-Match` gets `304` (no body)
otherwise.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from retrofit_agent.errors import ConfigError
from retrofit_agent.fleet.store import Campaign
from retrofit_agent.transport.protocol import PROTOCOL


def read_document(path: Path) -> tuple[str, bytes]:
    """(sha256, bytes) of a campaign file; ConfigError naming the file if it is not JSON."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise ConfigError(f"{path}: not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: a campaign is a JSON object, not {type(document).__name__}")
    return hashlib.sha256(data).hexdigest(), data


def etag(campaigns: list[Campaign]) -> str:
    digest = hashlib.sha256("".join(c.sha256 for c in campaigns).encode()).hexdigest()
    return f'"{digest}"'


def body(campaigns: list[Campaign]) -> bytes:
    """`{"protocol": 1, "campaigns": [{"sha256": ..., "document": {...}}, ...]}`."""
    items = b",".join(
        b'{"sha256":"' + c.sha256.encode() + b'","document":' + c.document + b"}" for c in campaigns
    )
    return b'{"protocol":' + str(PROTOCOL).encode() + b',"campaigns":[' + items + b"]}"
