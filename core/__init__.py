"""Shepherd's engine: events, store, supervisor and backends. Never imports textual."""
