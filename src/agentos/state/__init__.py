"""Durable per-agent key/value state (STORE, FETCH, DELETE, KEYS, CAS) in SQLite."""
