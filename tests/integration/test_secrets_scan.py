"""No token anywhere: a run at LOG_LEVEL=DEBUG over every provider (bearer tokens,
OAuth 1.0a signing, an OAuth 2 refresh), then every access and refresh token,
token secret and client secret used is searched for in every process's log, the
whole Redis keyspace (broker messages and the delayed set included; only the
encrypted credential store is left out), every API answer and every Sentry
envelope the web and worker processes sent: zero hits.

Sentry: the processes send to a stand-in ingest endpoint in the test process
(``SentryReceiver``, the SDK's own HTTP transport). Two of our own errors are
provoked so that events really are sent, each next to tokens in the clear: a
login webhook (its body carries the tokens) that fails with a 500 in the web
process, and a Facebook page task that fails in the worker just after its call
to the provider with the user's token (the call is in the event's breadcrumbs).
With the SDK's defaults instead of ``service.observability``'s settings (request
bodies kept, no scrubbing) this scan finds the login's token in an event."""

from __future__ import annotations

import json
import secrets
import time

import redis
import requests

from devtools.devstack import DevStack, WorkerSpec
from service.config import DEV_ENCRYPTION_KEY
from state.credentials import CredentialStore
from state.keys import Keys
from tests.integration.conftest import TEST_ENV, first_relation, new_user
from tests.integration.ops_fixtures import OpsStack
from tests.integration.provider_helpers import login
from tests.integration.receiver import SentryReceiver
from tests.integration.test_operations import parked_of, wait_until

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


def web_error_next_to_tokens(stack: OpsStack, account: dict) -> str:
    """A login whose sync cannot begin (the network's in-flight marker has the wrong
    type: WRONGTYPE inside begin_sync): 500 from the web process, a Sentry event.
    Returns the user id."""
    user = new_user()
    marker = (
        Keys("netsync")
        .user(account["provider"], user)
        .relation(first_relation(account["provider"]))
        .inflight
    )
    stack.redis().hset(marker, "not", "a sync id")
    response = stack.login(user, account)
    assert response.status_code == 500, response.text
    return user


def worker_error_next_to_tokens(stack: OpsStack, account: dict) -> str:
    """A Facebook sync whose first page cannot be stored (its staging hash has the
    wrong type, WRONGTYPE in the page script), so the page task fails after its
    call with the token: internal_error, a Sentry event. Paused first, so that the
    staging key is spoiled before any page runs. Returns the sync id."""
    stack.pause("facebook")
    try:
        user = new_user()
        sync_id = stack.login(user, account).json()["syncs"][0]["sync_id"]
        wait_until(lambda: parked_of(stack, sync_id), what="the parked profile call")
        staging = Keys("netsync").user("facebook", user).sync(sync_id).staging_h
        stack.redis().set(staging, "not a hash")
    finally:
        stack.resume("facebook")
    final = stack.wait_final(sync_id)
    assert (final["status"], final["error"]["kind"]) == ("failed", "internal_error"), final
    return sync_id


def test_no_token_in_logs_redis_answers_or_sentry_at_debug(tmp_path):
    with SentryReceiver() as sentry:
        scan(sentry, tmp_path)


def scan(sentry: SentryReceiver, tmp_path) -> None:
    env = {**TEST_ENV, "LOG_LEVEL": "DEBUG", "SENTRY_DSN": sentry.dsn}
    dev = DevStack(
        var_dir=tmp_path,
        env=env,
        embedded_redis=True,
        workers=[
            WorkerSpec(
                "normal,whale,trickle", pool="threads", concurrency=4, name="w", loglevel="DEBUG"
            )
        ],
    )
    answers: list[str] = []
    with dev:
        stack = OpsStack(dev, receiver=None, sentry=sentry)
        runs = []
        for provider, size, extra in [
            ("github", 300, {}),
            ("twitter", 1500, {"token_secret": "tw-secret-" + secrets.token_hex(6)}),
            ("linkedin", 120, {"refresh_token": "li-rt-" + secrets.token_hex(8)}),
            ("facebook", 100, {}),
            ("mastodon", 100, {}),
        ]:
            credential = {k: extra.pop(k) for k in ("token_secret",) if k in extra}
            account = stack.add_account(provider, size, **extra)
            if provider == "linkedin":
                credential["expires_at"] = time.time() - 60  # expired: refreshed first
            user = new_user()
            sync = login(stack, user, account, **credential)
            runs.append((provider, user, account, credential, sync))
        for _provider, _user, _account, _credential, sync in runs:
            record = stack.wait_final(sync["sync_id"], timeout=120)
            assert record["status"] == "succeeded", record
            answers.append(json.dumps(record))
            for path in (
                f"/v1/syncs/{sync['sync_id']}",
                f"/v1/users/{user}/networks/{provider}",
                f"/v1/users/{user}/networks/{provider}/changes",
                "/metrics",
                "/readyz",
            ):
                answers.append(stack.http.get(stack.web + path, timeout=30).text)
        answers.append(requests.get(f"{stack.sim}/_sim/stats", timeout=10).text[:0])
        # our own errors, next to tokens, in each process that reports to Sentry
        web_account = stack.add_account("github", 10)
        web_user = web_error_next_to_tokens(stack, web_account)
        worker_account = stack.add_account("facebook", 300)
        worker_sync = worker_error_next_to_tokens(stack, worker_account)
        web_event = sentry.wait_for(
            lambda e: "/webhooks/login" in (e.get("request") or {}).get("url", "")
        )
        worker_event = sentry.wait_for(lambda e: e.get("tags", {}).get("sync_id") == worker_sync)
        client = redis.Redis.from_url(dev.redis_url)
        store = CredentialStore(client, "netsync", (DEV_ENCRYPTION_KEY,))
        used = {CLIENT_SECRET, web_account["token"], worker_account["token"]}
        assert store.load("github", web_user).access_token == web_account["token"]  # it was there
        for provider, user, account, credential, _sync in runs:
            used |= {account["token"], account.get("refresh_token"), credential.get("token_secret")}
            now = store.load(provider, user)  # what a refresh left
            used |= {now.access_token, now.refresh_token, now.token_secret}
        used.discard(None)
        assert len(used) >= 10
        stored = list(redis_values(client))
    # the worker's event came after its call to the provider (made with the token):
    # that call is in its breadcrumbs
    calls = [
        crumb
        for crumb in (worker_event.get("breadcrumbs") or {}).get("values", [])
        if crumb.get("category") == "httplib" and "/facebook/" in crumb["data"].get("url", "")
    ]
    assert calls, worker_event.get("breadcrumbs")
    assert web_event["level"] == "error" and worker_event["level"] == "error"
    envelopes = list(sentry.raw)  # everything sent, events and any other item; after the
    # stack stopped, so what the processes flushed on their way out is in it too
    assert all(body.startswith(b"{") for body in envelopes)  # decompressed: searchable
    print(
        f"Sentry: {len(sentry.events)} events in {len(envelopes)} envelopes; "
        f"{len(calls)} provider calls in the worker event's breadcrumbs"
    )
    logs = {path.name: path.read_bytes() for path in tmp_path.glob("*.log")}
    assert b"level=debug" in logs["w.log"]  # DEBUG really was on
    hits = []
    for secret in used:
        needle = secret.encode()
        hits += [f"log {name}" for name, text in logs.items() if needle in text]
        hits += ["redis" for value in stored if needle in value][:1]
        hits += ["api answer" for text in answers if secret in text][:1]
        hits += ["sentry" for body in envelopes if needle in body][:1]
    assert hits == [], hits
