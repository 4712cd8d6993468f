"""Primitives every part shares (device, fleet and offline): strict models, settings files,
atomic writes, SQLite write transactions, backoff, log lines. Nothing here imports another part
of the package but errors, so any part can use them without pulling in more."""
