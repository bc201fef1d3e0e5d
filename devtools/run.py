"""``make run``: every Procfile process under honcho, with Redis taken care of.

``honcho start`` on the Procfile as it is: flower (optional role) starts only
with ``FLOWER_BASIC_AUTH=user:password``; without it its line says so and
idles (the Procfile's own rule, so a plain ``honcho start`` behaves the same).
Uses ``REDIS_URL`` / ``CELERY_BROKER_URL`` when set; otherwise starts the
embedded Redis (append-only file under ``./var/``) first and stops it last.
Likewise ``DATABASE_URL``, else the embedded PostgreSQL (data under
``./var/postgres``); the schema is migrated before anything starts. With the
providers' URLs (``<PROVIDER>_API_URL``) on the local simulator, every process
gets ``OAUTHLIB_INSECURE_TRANSPORT=1`` (oauthlib refuses http:// otherwise).
SIGTERM or Ctrl-C stops everything.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from devtools.devstack import allow_plain_http_oauth
from service.config import load_settings
from state.embedded_redis import EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env.setdefault("PORT", "8000")
    allow_plain_http_oauth(env)  # providers pointed at the simulator (http://127.0.0.1)
    server = None
    if not env.get("REDIS_URL"):
        server = EmbeddedRedis(load_settings(env).var_dir, persist=True)
        env["REDIS_URL"] = server.start()
        print(f"embedded Redis at {env['REDIS_URL']} (data in {server.directory})", flush=True)
    if not env.get("DATABASE_URL"):
        from state import embedded_postgres

        env["DATABASE_URL"] = embedded_postgres.start(load_settings(env).var_dir)
        print(f"embedded PostgreSQL at {env['DATABASE_URL']}", flush=True)
    from state import migrate

    migrate.upgrade(env["DATABASE_URL"])
    honcho = subprocess.Popen(
        [os.path.join(bin_dir, "honcho"), "start", "-f", "Procfile"],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )

    def forward(signum, _frame):
        if honcho.poll() is None:
            os.killpg(honcho.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        return honcho.wait()
    finally:
        if server:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
