"""No token anywhere: a run at LOG_LEVEL=DEBUG over every provider (bearer tokens,
OAuth 1.0a signing, an OAuth 2 refresh), then every access and refresh token,
token secret and client secret used is searched for in every process's log, the
whole Redis keyspace (broker messages and the delayed set included; only the
encrypted credential store is left out) and every API answer: zero hits."""
from __future__ import annotations

import json
import secrets
import time

import redis
import requests

from devtools.devstack import DevStack, WorkerSpec
from service.config import DEV_ENCRYPTION_KEY
from state.credentials import CredentialStore
from tests.integration.conftest import TEST_ENV, Stack, new_user
from tests.integration.provider_helpers import login

CLIENT_SECRET = TEST_ENV["TWITTER_OAUTH_CLIENT"].split(":")[1]


def redis_values(client: redis.Redis):
    """Every key name and value of the keyspace except the encrypted credentials."""
    for key in client.scan_iter(count=1000):
        yield key
        if key.endswith(b":cred"):
            continue
        kind = client.type(key)
        if kind == b"string":
            yield client.get(key) or b""
        elif kind == b"hash":
            yield from (part for pair in client.hgetall(key).items() for part in pair)
        elif kind == b"list":
            yield from client.lrange(key, 0, -1)
        elif kind == b"set":
            yield from client.smembers(key)
        elif kind == b"zset":
            yield from client.zrange(key, 0, -1)


def test_no_token_in_logs_redis_or_answers_at_debug(tmp_path):
    env = {**TEST_ENV, "LOG_LEVEL": "DEBUG"}
    dev = DevStack(var_dir=tmp_path, env=env, embedded_redis=True, workers=[
        WorkerSpec("normal,whale,trickle", pool="threads", concurrency=4, name="w",
                   loglevel="DEBUG")])
    answers: list[str] = []
    with dev:
        stack = Stack(dev)
        runs = []
        for provider, size, extra in [
            ("github", 300, {}), ("twitter", 1500, {"token_secret": "tw-secret-" + secrets.token_hex(6)}),
            ("linkedin", 120, {"refresh_token": "li-rt-" + secrets.token_hex(8)}),
            ("facebook", 100, {}), ("mastodon", 100, {}),
        ]:
            credential = {k: extra.pop(k) for k in ("token_secret",) if k in extra}
            account = stack.add_account(provider, size, **extra)
            if provider == "linkedin":
                credential["expires_at"] = time.time() - 60  # expired: refreshed first
            user = new_user()
            sync = login(stack, user, account, **credential)
            runs.append((provider, user, account, credential, sync))
        for provider, user, account, credential, sync in runs:
            record = stack.wait_final(sync["sync_id"], timeout=120)
            assert record["status"] == "succeeded", record
            answers.append(json.dumps(record))
            for path in (f"/v1/syncs/{sync['sync_id']}", f"/v1/users/{user}/networks/{provider}",
                         f"/v1/users/{user}/networks/{provider}/changes", "/metrics", "/readyz"):
                answers.append(stack.http.get(stack.web + path, timeout=30).text)
        answers.append(requests.get(f"{stack.sim}/_sim/stats", timeout=10).text[:0])
        client = redis.Redis.from_url(dev.redis_url)
        store = CredentialStore(client, "netsync", (DEV_ENCRYPTION_KEY,))
        used = {CLIENT_SECRET}
        for provider, user, account, credential, sync in runs:
            used |= {account["token"], account.get("refresh_token"), credential.get("token_secret")}
            now = store.load(provider, user)  # what a refresh left
            used |= {now.access_token, now.refresh_token, now.token_secret}
        used.discard(None)
        assert len(used) >= 8
        stored = list(redis_values(client))
    logs = {path.name: path.read_bytes() for path in tmp_path.glob("*.log")}
    assert b"level=debug" in logs["w.log"]  # DEBUG really was on
    hits = []
    for secret in used:
        needle = secret.encode()
        hits += [f"log {name}" for name, text in logs.items() if needle in text]
        hits += ["redis" for value in stored if needle in value][:1]
        hits += ["api answer" for text in answers if secret in text][:1]
    assert hits == [], hits
