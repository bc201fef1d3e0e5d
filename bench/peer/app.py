"""The implementation most teams write first, written the way Celery's docs suggest.

One Celery task per sync pages through the provider sequentially with
``requests``; Celery's own ``rate_limit`` on the task; on a 429 (or GitHub's
403 with no quota left) it sleeps for ``Retry-After`` or until
``X-RateLimit-Reset`` and asks again; every sync on one queue; the network
goes into a Redis set as pages arrive. The task is idempotent (a set), so it
acks late, as Celery's docs advise for idempotent tasks, and a worker that
dies gives its message back (after the broker's visibility timeout).

Settings from the environment (the benchmark sets them): ``PEER_BROKER_URL``,
``PEER_REDIS_URL``, ``PEER_RATE_LIMIT`` (Celery's syntax, e.g. ``20/s``),
``PEER_VISIBILITY_TIMEOUT``.
"""

import os
import threading
import time

import redis
import requests
from celery import Celery

app = Celery("peer", broker=os.environ.get("PEER_BROKER_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    task_default_queue="peer",
    task_acks_late=True,
    task_ignore_result=True,
    worker_prefetch_multiplier=1,
    broker_transport_options={
        "visibility_timeout": int(os.environ.get("PEER_VISIBILITY_TIMEOUT", "3600"))
    },
)
store = redis.Redis.from_url(os.environ.get("PEER_REDIS_URL", "redis://127.0.0.1:6379/0"))
_local = threading.local()


def http() -> requests.Session:
    if not hasattr(_local, "session"):
        _local.session = requests.Session()
    return _local.session


def retry_after(response: requests.Response) -> float | None:
    """Seconds to wait when the provider says we are over its limit, else None."""
    limited = response.status_code == 429 or (
        response.status_code == 403 and response.headers.get("X-RateLimit-Remaining") == "0"
    )
    if not limited:
        return None
    if "Retry-After" in response.headers:
        return float(response.headers["Retry-After"])
    reset = response.headers.get("X-RateLimit-Reset")
    return max(0.0, float(reset) - time.time()) + 0.5 if reset else 60.0


@app.task(name="peer.sync_followers", rate_limit=os.environ.get("PEER_RATE_LIMIT") or None)
def sync_followers(user_id: str, login: str, token: str, api_url: str) -> int:
    key = f"peer:{user_id}:followers"
    store.hset(f"peer:{user_id}:sync", mapping={"status": "running", "started": time.time()})
    url = f"{api_url}/users/{login}/followers?per_page=100&page=1"
    headers = {"Authorization": f"token {token}", "Accept": "application/vnd.github+json"}
    while url:
        response = http().get(url, headers=headers, timeout=(5, 30))
        wait = retry_after(response)
        if wait is not None:
            time.sleep(wait)
            continue
        response.raise_for_status()
        ids = [str(user["id"]) for user in response.json()]
        if ids:
            store.sadd(key, *ids)
        url = response.links.get("next", {}).get("url")
    store.hset(f"peer:{user_id}:sync", mapping={"status": "done", "finished": time.time()})
    return store.scard(key)
