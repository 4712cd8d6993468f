"""The `retrofit-fleet` command line: serve, devices, campaigns, retention, queries.

Every command takes `--database URL` (`postgresql://...` or `sqlite:///PATH`). Output meant
for scripts is on stdout (`device add` prints the token and nothing else; listings and queries
are JSON lines); every expected failure is one line on stderr, `retrofit-fleet: error: ...`,
with the sysexits-style code of retrofit_agent.errors (67: no such device or campaign).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from retrofit_agent.common import logs
from retrofit_agent.common.settings import describe_errors
from retrofit_agent.errors import ConfigError, RetrofitError
from retrofit_agent.fleet import campaigns, localdb
from retrofit_agent.fleet.limits import Limits
from retrofit_agent.fleet.query import nearest
from retrofit_agent.fleet.store import FleetStore, ObservationQuery, open_store
from retrofit_agent.fleet.tokens import new_token, token_hash

PROG = "retrofit-fleet"


class NotFound(RetrofitError):
    exit_code = 67  # EX_NOUSER


def moment(text: str) -> datetime:
    """An ISO 8601 time; UTC when it names no zone."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="The fleet backend of retrofit-agent.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str, database: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help)
        if database:
            sub.add_argument("--database", required=True, metavar="URL",
                             help="postgresql://... or sqlite:///PATH")  # fmt: skip
        return sub

    serve = command("serve", "receive the devices' uploads (the upload protocol, v1)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    serve.add_argument("--port", type=int, default=8080, help="0: any free port")
    serve.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    serve.add_argument("--max-connections", type=int, default=1000, help="per worker (1000)")
    serve.add_argument("--embedding-dim", type=int, required=True, metavar="N",
                       help="float16 values per embedding (the bundle's dimension)")  # fmt: skip
    for name, field in Limits.model_fields.items():
        if name != "embedding_dim":
            flag = "--" + name.replace("_", "-")
            serve.add_argument(flag, type=type(field.default), help=f"default {field.default}")
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    serve.add_argument("--cert", help="TLS certificate chain (PEM); needs --key")
    serve.add_argument("--key", help="TLS private key (PEM)")

    device = command("device", "add, list or revoke device tokens")
    device.add_argument("action", choices=["add", "list", "revoke"])
    device.add_argument("device_id", nargs="?", help="add, revoke: the device's id")

    campaign = command("campaign", "add, list or remove campaign documents")
    campaign.add_argument("action", choices=["add", "list", "remove"])
    campaign.add_argument("item", nargs="?", help="add: a JSON file; remove: its sha256")

    retention = command("retention", "drop what was captured more than N days ago")
    retention.add_argument("--keep-days", type=int, required=True, metavar="N")

    query = command(
        "query", "observations, label events, or nearest neighbours of an embedding (JSON lines)"
    )
    query.add_argument("what", choices=["observations", "events", "nearest"])
    query.add_argument("--device", help="only this device")
    query.add_argument("--since", type=moment, help="ISO 8601 (default: 24 hours ago)")
    query.add_argument("--until", type=moment, help="ISO 8601, excluded (default: now)")
    query.add_argument("--label", help="observations, events: only those of this label")
    query.add_argument("--limit", type=int, default=1000, help="observations, events: (1000)")
    query.add_argument("--embedding", type=Path, help="nearest: float16 bytes, as uploaded")
    query.add_argument("--embedding-b64", help="nearest: the same, base64")
    query.add_argument("-k", type=int, default=10, help="nearest: how many (10)")

    postgres = command("postgres", "a throw-away local PostgreSQL cluster", database=False)
    postgres.add_argument("action", choices=["start", "stop"])
    postgres.add_argument("directory", type=Path)
    return parser


def run_serve(args: argparse.Namespace) -> int:
    from retrofit_agent.fleet.serve import ServeSettings, serve

    limits = {name: getattr(args, name) for name in Limits.model_fields}
    try:
        settings = ServeSettings(
            database=args.database,
            host=args.host,
            port=args.port,
            workers=args.workers,
            max_connections=args.max_connections,
            cert=args.cert,
            key=args.key,
            log_level=args.log_level,
            limits={k: v for k, v in limits.items() if v is not None},
        )
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc, "options")) from None
    serve(settings)
    return 0


def run_device(store: FleetStore, args: argparse.Namespace) -> int:
    if args.action == "list":
        for d in store.devices():
            revoked = d.revoked_utc.isoformat() if d.revoked_utc else None
            line = {"device_id": d.device_id, "created_utc": d.created_utc.isoformat()}
            print(json.dumps({**line, "revoked_utc": revoked}))
        return 0
    if not args.device_id:
        raise ConfigError(f"device {args.action}: needs the device's id")
    if args.action == "add":
        token = new_token()
        store.add_device(args.device_id, token_hash(token))
        print(token)
    elif not store.revoke_device(args.device_id):
        raise NotFound(f"device {args.device_id!r}: no such device with a valid token")
    return 0


def run_campaign(store: FleetStore, args: argparse.Namespace) -> int:
    if args.action == "list":
        for c in store.campaigns():
            line = {"sha256": c.sha256, "added_utc": c.added_utc.isoformat()}
            print(json.dumps({**line, "bytes": len(c.document)}))
        return 0
    if not args.item:
        raise ConfigError(f"campaign {args.action}: needs a file (add) or a sha256 (remove)")
    if args.action == "add":
        sha256, document = campaigns.read_document(Path(args.item))
        store.add_campaign(sha256, document)
        print(sha256)
    elif not store.remove_campaign(args.item):
        raise NotFound(f"campaign {args.item}: no such campaign")
    return 0


def query_vector(args: argparse.Namespace) -> np.ndarray:
    if (args.embedding is None) == (args.embedding_b64 is None):
        raise ConfigError("query nearest: needs --embedding FILE or --embedding-b64 B64")
    if args.embedding is not None:
        try:
            data = args.embedding.read_bytes()
        except OSError as exc:
            raise ConfigError(f"--embedding {args.embedding}: {exc.strerror}") from None
    else:
        try:
            data = base64.b64decode(args.embedding_b64, validate=True)
        except binascii.Error:
            raise ConfigError("--embedding-b64: not base64") from None
    if not data or len(data) % 2:
        raise ConfigError(f"embedding: {len(data)} bytes is not float16 values")
    return np.frombuffer(data, np.float16)


def run_query(store: FleetStore, args: argparse.Namespace) -> int:
    until = args.until or datetime.now(UTC)
    since = args.since or until - timedelta(days=1)
    window = ObservationQuery(since, until, args.device, args.label, args.limit)
    if args.what == "observations":
        for _, header in store.observations(window):
            print(header)
        return 0
    if args.what == "events":  # by start time
        for event in store.events(window):
            print(event)
        return 0
    for n in nearest(store, query_vector(args), since, until, args.k, args.device):
        line = {"similarity": round(n.similarity, 6), "device_id": n.device_id, "seq": n.seq}
        print(json.dumps({**line, "captured_utc": n.captured_utc.isoformat()}))
    return 0


def run_postgres(args: argparse.Namespace) -> int:
    cluster = localdb.LocalCluster(args.directory.resolve())
    if args.action == "start":
        print(cluster.start().url)
    else:
        cluster.stop()
    return 0


def run_retention(store: FleetStore, args: argparse.Namespace) -> int:
    if args.keep_days < 1:
        raise ConfigError(f"--keep-days: at least 1, not {args.keep_days}")
    for dropped in store.retention(args.keep_days, datetime.now(UTC)):
        print(json.dumps({"dropped": dropped}))
    return 0


STORE_COMMANDS: dict[str, Callable[[FleetStore, argparse.Namespace], int]] = {
    "device": run_device,
    "campaign": run_campaign,
    "query": run_query,
    "retention": run_retention,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup("INFO")
    try:
        if args.command == "serve":
            return run_serve(args)
        if args.command == "postgres":
            return run_postgres(args)
        store = open_store(args.database, create=args.command != "query", pool_size=1)
        try:
            return STORE_COMMANDS[args.command](store, args)
        finally:
            store.close()
    except RetrofitError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
