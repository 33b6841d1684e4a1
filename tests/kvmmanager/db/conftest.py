"""Every DB-layer test runs on SQLite (a file) and on a real PostgreSQL server that the
run starts itself (tests/postgres_cluster.py)."""

from tests.postgres_cluster import db_url, pg_cluster  # noqa: F401 (fixtures)
