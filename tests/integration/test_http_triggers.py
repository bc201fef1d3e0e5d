"""The HTTP triggers, the status API, ops endpoints and the CLI, against real Redis.

No worker runs here: a trigger's job ends when the profile task is on the
broker, and these tests check exactly that boundary (what is started, what
is refused, what is answered), including through a real threaded server.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families

from service import observability
from service.config import load_settings
from state.credentials import Credential
from tests.integration.conftest import new_user
from tests.integration.conftest_http import (
    BEARER,
    account,
    finish_sync,
    login_body,
    make_app,
    post_login,
    recent_sync_ids,
    signed_headers,
)


def error_code(response) -> str:
    assert response.is_json, response.data[:200]
    return response.get_json()["error"]["code"]


def assert_nothing_started(svc, user_id: str) -> None:
    assert recent_sync_ids(svc) == []
    for provider in ("github", "twitter", "mastodon"):
        assert not svc.credentials.exists(provider, user_id)


# -- the login webhook: refusals ------------------------------------------------------------
def test_a_bad_signature_is_refused_and_starts_nothing(http_client, svc):
    user = new_user()
    response = post_login(http_client, login_body(user), secret="not-the-secret")
    assert response.status_code == 401 and error_code(response) == "bad_signature"
    assert_nothing_started(svc, user)


@pytest.mark.parametrize("skew", [-301, -3600, 301])
def test_a_stale_or_future_signature_is_refused(http_client, svc, skew):
    user = new_user()
    response = post_login(http_client, login_body(user), timestamp=time.time() + skew)
    assert response.status_code == 401 and error_code(response) == "bad_signature"
    assert_nothing_started(svc, user)


def test_a_missing_signature_is_refused(http_client, svc):
    user = new_user()
    response = http_client.post(
        "/webhooks/login", data=login_body(user), content_type="application/json"
    )
    assert response.status_code == 401
    assert_nothing_started(svc, user)


def test_the_signature_covers_the_raw_body(http_client, svc):
    user = new_user()
    body = login_body(user)
    headers = signed_headers(body)
    response = http_client.post(
        "/webhooks/login", data=body.replace(b'"u-', b'"U-'), headers=headers
    )
    assert response.status_code == 401
    assert_nothing_started(svc, user)


def test_malformed_json_is_400(http_client, svc):
    response = post_login(http_client, b'{"user_id": "u-1", "accounts": [')
    assert response.status_code == 400 and error_code(response) == "malformed"
    assert recent_sync_ids(svc) == []


def test_absurdly_nested_json_is_400_not_500(http_client):
    response = post_login(http_client, b"[" * 30000 + b"]" * 30000)
    assert response.status_code == 400


def test_a_body_that_is_not_json_is_415(http_client, svc):
    user = new_user()
    response = post_login(http_client, login_body(user), content_type="text/plain")
    assert response.status_code == 415 and error_code(response) == "unsupported_media_type"
    assert_nothing_started(svc, user)


def test_a_body_over_the_limit_is_413(http_client, svc):
    user = new_user()
    body = login_body(user, account(account_id="x" * 70_000))
    response = post_login(http_client, body)
    assert response.status_code == 413 and error_code(response) == "too_large"
    assert_nothing_started(svc, user)


def test_an_unknown_provider_in_a_second_account_changes_nothing(http_client, svc):
    user = new_user()
    response = post_login(http_client, login_body(user, account("github"), account("myspace")))
    assert response.status_code == 422 and error_code(response) == "unknown_provider"
    assert "accounts[1].provider" in response.get_json()["error"]["message"]
    assert_nothing_started(svc, user)


def _without(fields: dict, name: str) -> dict:
    return {key: value for key, value in fields.items() if key != name}


@pytest.mark.parametrize("field", ["provider", "account_id", "access_token"])
def test_a_missing_account_field_is_422(http_client, svc, field):
    user = new_user()
    response = post_login(
        http_client, login_body(user, account("twitter"), _without(account("github"), field))
    )
    assert response.status_code == 422 and error_code(response) == "missing_field"
    assert field in response.get_json()["error"]["message"]
    assert_nothing_started(svc, user)


@pytest.mark.parametrize(
    "document",
    [
        {"accounts": [{"provider": "github", "account_id": "a", "access_token": "t"}]},
        {"user_id": "u-x"},
    ],
)
def test_a_missing_top_level_field_is_422(http_client, svc, document):
    response = post_login(http_client, json.dumps(document).encode())
    assert response.status_code == 422 and error_code(response) == "missing_field"
    assert recent_sync_ids(svc) == []


@pytest.mark.parametrize(
    "document",
    [
        [],
        "a string",
        {"user_id": 42, "accounts": []},
        {"user_id": "u x", "accounts": [{"provider": "github"}]},
        {"user_id": "u-x", "accounts": []},
        {"user_id": "u-x", "accounts": {"provider": "github"}},
        {"user_id": "u-x", "accounts": ["github"]},
        {"user_id": "u-x", "accounts": [account(expires_at="tomorrow")]},
        {"user_id": "u-x", "accounts": [account(expires_at=True)]},
        {"user_id": "u-x", "accounts": [account(expires_at=10**30)]},
        {"user_id": "u-x", "accounts": [account(access_token=12345)]},
        {"user_id": "u-x", "accounts": [account(access_token="")]},
        {"user_id": "u-x", "accounts": [account(access_token="a b")]},
        {"user_id": "u-x", "accounts": [account(refresh_token=["x"])]},
        {"user_id": "u-x", "accounts": [account("github"), account("github")]},
    ],
)
def test_schema_violations_are_422_and_start_nothing(http_client, svc, document):
    response = post_login(http_client, json.dumps(document).encode())
    assert response.status_code == 422, response.data
    assert recent_sync_ids(svc) == []
    assert not svc.credentials.exists("github", "u-x")


def test_a_malformed_delivery_id_is_400(http_client):
    response = post_login(http_client, login_body(new_user()), delivery="x" * 300)
    assert response.status_code == 400


def test_wrong_method_and_unknown_path_are_json(http_client):
    response = http_client.get("/webhooks/login")
    assert response.status_code == 405 and error_code(response) == "method_not_allowed"
    assert "POST" in response.headers["Allow"]
    response = http_client.get("/nowhere")
    assert response.status_code == 404 and error_code(response) == "not_found"


# -- the login webhook: accepted ---------------------------------------------------------------
def test_a_valid_login_queues_one_sync_per_account(http_client, svc):
    user = new_user()
    github, mastodon = account("github"), account("mastodon", expires_at=None)
    response = post_login(http_client, login_body(user, github, mastodon))
    assert response.status_code == 202
    syncs = response.get_json()["syncs"]
    assert [s["provider"] for s in syncs] == ["github", "mastodon"]
    for ticket in syncs:
        assert ticket["status"] == "queued" and ticket["queue"] == "normal"
        assert ticket["status_url"] == f"/v1/syncs/{ticket['sync_id']}"
        record = http_client.get(ticket["status_url"], headers=BEARER).get_json()
        assert record["status"] == "queued" and record["trigger"] == "webhook"
        assert record["user_id"] == user
    assert sorted(recent_sync_ids(svc)) == sorted(s["sync_id"] for s in syncs)
    stored = svc.credentials.load("github", user)
    assert stored.access_token == github["access_token"]
    assert stored.account_id == github["account_id"]
    # the profile task is on the broker, carrying the sync id and nothing else
    broker = redis.Redis.from_url(svc.redis_url.rsplit("/", 1)[0] + "/14")
    messages = [json.loads(raw) for raw in broker.lrange("normal", 0, -1)]
    sent = [m for m in messages if m["headers"]["argsrepr"] == repr([syncs[0]["sync_id"]])]
    assert len(sent) == 1 and sent[0]["headers"]["task"] == "github.profile"
    assert github["access_token"] not in json.dumps(messages)


def test_a_login_costs_the_same_few_state_round_trips_for_one_sync_or_several(
    http_client, svc, monkeypatch
):
    """service.syncs.start_syncs sends each step of every sync of a login together:
    the delivery claim, credentials + index entries + reads, the begin scripts, the
    bookkeeping of the syncs created, then (after the publishes) the counters and
    the delivery's answer. Five round trips to the state Redis, whatever the count."""
    import redis.connection

    state_db = int(svc.redis_url.rsplit("/", 1)[1])
    sends = []
    original = redis.connection.AbstractConnection.send_packed_command

    def counted(self, command, check_health=True):
        if self.db == state_db:
            sends.append(command)
        return original(self, command, check_health)

    assert post_login(http_client, login_body(new_user())).status_code == 202  # warm-up
    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)
    for accounts in ((account("github"),), (account("github"), account("mastodon"))):
        sends.clear()
        response = post_login(http_client, login_body(new_user(), *accounts))
        assert response.status_code == 202
        syncs = response.get_json()["syncs"]
        assert len(syncs) >= len(accounts) and all(s["status"] == "queued" for s in syncs)
        assert len(sends) == 5, (len(syncs), len(sends))


def test_a_repeated_delivery_gets_the_first_answer_and_starts_nothing(http_client, svc):
    user = new_user()
    first = post_login(http_client, login_body(user), delivery="delivery-1")
    assert first.status_code == 202
    # even a different (validly signed) body: the delivery id decides
    again = post_login(http_client, login_body(user, account("twitter")), delivery="delivery-1")
    assert again.status_code == 202
    assert again.get_json() == first.get_json()
    assert again.headers["X-Netsync-Replayed"] == "true"
    assert len(recent_sync_ids(svc)) == 1
    assert not svc.credentials.exists("twitter", user)


def test_a_repeated_delivery_of_a_refused_body_gets_the_same_refusal(http_client, svc):
    body = json.dumps({"user_id": "u-y", "accounts": [account("myspace")]}).encode()
    first = post_login(http_client, body, delivery="delivery-2")
    again = post_login(http_client, login_body(new_user()), delivery="delivery-2")
    assert first.status_code == again.status_code == 422
    assert again.get_json() == first.get_json()
    assert recent_sync_ids(svc) == []


def test_a_bad_signature_does_not_claim_the_delivery_id(http_client):
    body = login_body(new_user())
    refused = post_login(http_client, body, delivery="delivery-3", secret="wrong")
    accepted = post_login(http_client, body, delivery="delivery-3")
    assert (refused.status_code, accepted.status_code) == (401, 202)


def test_a_second_login_while_in_flight_answers_the_same_sync(http_client, svc):
    user = new_user()
    first = post_login(http_client, login_body(user)).get_json()["syncs"][0]
    newer = account("github", access_token="tok-newer-login")
    second = post_login(http_client, login_body(user, newer)).get_json()["syncs"][0]
    assert second["sync_id"] == first["sync_id"] and second["status"] == "queued"
    assert len(recent_sync_ids(svc)) == 1
    assert svc.credentials.load("github", user).access_token == "tok-newer-login"


def test_a_login_within_the_freshness_window_is_fresh(http_client, svc):
    user = new_user()
    ticket = post_login(http_client, login_body(user)).get_json()["syncs"][0]
    assert finish_sync(svc, ticket["sync_id"], [("1", "ada")]) == "succeeded"
    again = post_login(http_client, login_body(user)).get_json()["syncs"][0]
    assert again["status"] == "fresh" and again["sync_id"] == ticket["sync_id"]
    assert len(recent_sync_ids(svc)) == 1


# -- the REST API -------------------------------------------------------------------------------
def link(svc, user: str, provider: str = "github", access_token: str = "tok-linked") -> None:
    svc.credentials.save(
        provider, user, Credential(account_id=f"{user}-acct", access_token=access_token)
    )


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic ZGV2OmRldg=="},
        {"Authorization": "dev-api-token"},
    ],
)
def test_the_api_needs_a_valid_bearer_token(http_client, headers):
    for method, path in [
        ("get", "/v1/syncs/s_x"),
        ("post", "/v1/syncs"),
        ("get", "/v1/users/u-1/networks/github"),
    ]:
        response = getattr(http_client, method)(path, headers=headers)
        assert response.status_code == 401 and error_code(response) == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_post_syncs_starts_one_sync(http_client, svc):
    user = new_user()
    link(svc, user)
    response = http_client.post(
        "/v1/syncs", headers=BEARER, json={"user_id": user, "provider": "github"}
    )
    assert response.status_code == 202
    ticket = response.get_json()
    assert ticket["status"] == "queued" and ticket["provider"] == "github"
    assert response.headers["Location"] == ticket["status_url"]
    record = http_client.get(ticket["status_url"], headers=BEARER).get_json()
    assert record["trigger"] == "api" and record["status"] == "queued"
    assert record["pages_fetched"] == 0 and record["expected_total"] is None
    assert record["created_at"].endswith("Z") and record["finished_at"] is None
    assert record["error"] is None and record["rate_limit"] is None


def test_force_resyncs_a_fresh_network(http_client, svc):
    user = new_user()
    link(svc, user)
    first = http_client.post(
        "/v1/syncs", headers=BEARER, json={"user_id": user, "provider": "github"}
    ).get_json()
    finish_sync(svc, first["sync_id"], [("1", "ada")])
    fresh = http_client.post(
        "/v1/syncs", headers=BEARER, json={"user_id": user, "provider": "github"}
    ).get_json()
    forced = http_client.post(
        "/v1/syncs", headers=BEARER, json={"user_id": user, "provider": "github", "force": True}
    )
    assert fresh["status"] == "fresh"
    assert forced.status_code == 202 and forced.get_json()["sync_id"] != first["sync_id"]


def test_post_syncs_without_credentials_is_409(http_client, svc):
    response = http_client.post(
        "/v1/syncs", headers=BEARER, json={"user_id": new_user(), "provider": "github"}
    )
    assert response.status_code == 409 and error_code(response) == "no_credentials"
    assert recent_sync_ids(svc) == []


@pytest.mark.parametrize(
    "kwargs, status",
    [
        ({"data": b"{not json", "content_type": "application/json"}, 400),
        ({"data": b"user_id=u-1", "content_type": "application/x-www-form-urlencoded"}, 415),
        ({"json": {"provider": "github"}}, 422),
        ({"json": {"user_id": "u-1"}}, 422),
        ({"json": {"user_id": "u-1", "provider": "myspace"}}, 422),
        ({"json": {"user_id": "u 1", "provider": "github"}}, 422),
        ({"json": {"user_id": "u-1", "provider": "github", "force": "yes"}}, 422),
        ({"json": ["u-1", "github"]}, 422),
        ({"json": {"user_id": "u-1", "provider": ["github"]}}, 422),
    ],
)
def test_post_syncs_refuses_bad_input(http_client, svc, kwargs, status):
    response = http_client.post("/v1/syncs", headers=BEARER, **kwargs)
    assert response.status_code == status and "error" in response.get_json()
    assert recent_sync_ids(svc) == []


def test_fifty_concurrent_requests_start_exactly_one_sync(live_server, svc):
    user = new_user()
    link(svc, user)
    start = threading.Barrier(50)

    def trigger(_):
        start.wait()
        return requests.post(
            f"{live_server}/v1/syncs",
            headers=BEARER,
            timeout=30,
            json={"user_id": user, "provider": "github"},
        )

    with ThreadPoolExecutor(50) as pool:
        responses = list(pool.map(trigger, range(50)))
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["sync_id"] for r in responses}) == 1
    assert len(recent_sync_ids(svc)) == 1
    counters = svc.redis.hgetall(f"{svc.settings.key_prefix}:metrics")
    assert counters[b'triggers{kind="api",outcome="queued"}'] == b"1"
    assert counters[b'triggers{kind="api",outcome="inflight"}'] == b"49"


def test_an_unknown_sync_id_is_404(http_client):
    for sync_id in ("s_doesnotexist", "x" * 500, "..%2F..%2Fetc"):
        response = http_client.get(f"/v1/syncs/{sync_id}", headers=BEARER)
        assert response.status_code == 404 and error_code(response) == "not_found"


def test_the_network_of_a_never_synced_user_is_404(http_client):
    user = new_user()
    for path in (
        f"/v1/users/{user}/networks/github",
        f"/v1/users/{user}/networks/github/changes",
        f"/v1/users/{user}/networks/myspace",
        "/v1/users/bad%20user/networks/github",
    ):
        response = http_client.get(path, headers=BEARER)
        assert response.status_code == 404 and error_code(response) == "not_found"


@pytest.mark.parametrize(
    "query, status",
    [
        ("limit=abc", 400),
        ("limit=1.5", 400),
        ("limit=0", 422),
        ("limit=-1", 422),
        ("limit=1001", 422),
        ("limit=99999999999999999999", 400),
        ("cursor=" + "c" * 600, 422),
    ],
)
def test_network_paging_parameters_are_validated(http_client, query, status):
    response = http_client.get(f"/v1/users/u-1/networks/github?{query}", headers=BEARER)
    assert response.status_code == status and "error" in response.get_json()


def test_a_synced_network_pages_with_a_cursor_and_shows_its_changes(http_client, svc):
    user = new_user()
    link(svc, user)
    ticket = http_client.post(
        "/v1/syncs", headers=BEARER, json={"user_id": user, "provider": "github"}
    ).get_json()
    people = [("101", "ada"), ("102", "bob"), ("103", "cy"), ("104", "di"), ("105", "ed")]
    assert finish_sync(svc, ticket["sync_id"], people) == "succeeded"
    seen, cursor = [], None
    while True:
        query = "limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = http_client.get(
            f"/v1/users/{user}/networks/github?{query}", headers=BEARER
        ).get_json()
        assert page["count"] == 5 and page["sync_id"] == ticket["sync_id"]
        assert page["synced_at"].endswith("Z")
        seen += [(c["id"], c["handle"]) for c in page["connections"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == people
    changes = http_client.get(
        f"/v1/users/{user}/networks/github/changes", headers=BEARER
    ).get_json()
    assert changes == {
        "sync_id": ticket["sync_id"],
        "removed": [],
        "initial": True,
        "added": ["101", "102", "103", "104", "105"],
        "next_cursor": None,
    }
    relation_path = http_client.get(
        f"/v1/users/{user}/networks/github/followers?limit=10", headers=BEARER
    ).get_json()
    assert [c["id"] for c in relation_path["connections"]] == [p[0] for p in people]
    other = http_client.get(f"/v1/users/{user}/networks/github/following", headers=BEARER)
    assert other.status_code == 404  # never synced
    assert (
        http_client.get(f"/v1/users/{user}/networks/github/friends", headers=BEARER).status_code
        == 404
    )  # no such relation
    record = http_client.get(ticket["status_url"], headers=BEARER).get_json()
    assert record["status"] == "succeeded" and record["connections_fetched"] == 5
    assert record["pages_fetched"] == 1 and record["started_at"] and record["finished_at"]


def test_a_failed_sync_shows_its_error_and_rate_limit(http_client, svc):
    user = new_user()
    link(svc, user)
    ticket = http_client.post(
        "/v1/syncs", headers=BEARER, json={"user_id": user, "provider": "github"}
    ).get_json()
    svc.store.update(
        ticket["sync_id"],
        rate_limit=5000,
        rate_remaining=0,
        rate_reset_at=1767225600,
        expected_total=1200,
    )
    svc.store.fail(ticket["sync_id"], "needs_reauth", "token_revoked", "the token was revoked")
    record = http_client.get(ticket["status_url"], headers=BEARER).get_json()
    assert record["status"] == "needs_reauth" and record["expected_total"] == 1200
    assert record["error"] == {"kind": "token_revoked", "message": "the token was revoked"}
    assert record["rate_limit"]["remaining"] == 0
    assert record["rate_limit"]["reset_at"] == "2026-01-01T00:00:00Z"


# -- failures of our own: JSON, no internals ------------------------------------------------------
def test_an_unexpected_error_is_a_json_500_without_internals(http_client, svc, monkeypatch):
    def explode(sync_id):
        raise RuntimeError("internal detail /srv/secret.py")

    monkeypatch.setattr(svc.store, "get_sync", explode)
    response = http_client.get("/v1/syncs/s_x", headers=BEARER)
    assert response.status_code == 500 and error_code(response) == "internal"
    assert b"secret.py" not in response.data


def test_an_unreachable_redis_is_a_503(http_client, svc, monkeypatch):
    def unreachable(sync_id):
        raise redis.ConnectionError("connection refused")

    monkeypatch.setattr(svc.store, "get_sync", unreachable)
    response = http_client.get("/v1/syncs/s_x", headers=BEARER)
    assert response.status_code == 503 and error_code(response) == "unavailable"


# -- ops endpoints ------------------------------------------------------------------------------
def test_healthz_and_readyz(http_client):
    assert http_client.get("/healthz").get_json() == {"status": "ok"}
    ready = http_client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"] == {"redis": "ok", "database": "ok", "broker": "ok"}


def test_readyz_is_503_when_the_database_is_unreachable(redis_url, key_prefix, http_broker_url):
    app = make_app(
        redis_url,
        key_prefix,
        http_broker_url,
        database_url="postgresql://postgres@127.0.0.1:9/none?connect_timeout=1",
    )
    response = app.test_client().get("/readyz")
    assert response.status_code == 503 and error_code(response) == "unavailable"
    assert response.get_json()["checks"]["database"].startswith("unreachable")
    app.extensions["netsync"].networks.close()


def test_readyz_is_503_when_the_broker_is_unreachable(redis_url, key_prefix):
    app = make_app(redis_url, key_prefix, "redis://127.0.0.1:9/0")  # discard port: refused
    started = time.monotonic()
    response = app.test_client().get("/readyz")
    assert response.status_code == 503 and error_code(response) == "unavailable"
    assert response.get_json()["checks"]["redis"] == "ok"
    assert response.get_json()["checks"]["broker"].startswith("unreachable")
    assert time.monotonic() - started < 10


def test_metrics_are_prometheus_text(http_client):
    post_login(http_client, login_body(new_user()))
    post_login(http_client, login_body(new_user()), secret="wrong")
    response = http_client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.get_data(as_text=True))}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in families.values()
        for s in family.samples
    }
    assert samples[("netsync_triggers_total", (("kind", "webhook"), ("outcome", "queued")))] == 1
    assert samples[("netsync_webhook_deliveries_total", (("outcome", "bad_signature"),))] == 1
    assert samples[("netsync_queue_length", (("queue", "normal"),))] >= 1
    assert ("netsync_queue_length", (("queue", "trickle"),)) in samples
    assert ("netsync_delayed_tasks", ()) in samples
    assert samples[("netsync_redis_up", ())] == 1


def test_openapi_describes_every_route(http_app, http_client):
    document = json.loads(http_client.get("/openapi.json").data)
    assert document["openapi"].startswith("3.1")
    for rule in http_app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        assert path in document["paths"], path
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            operation = document["paths"][path][method.lower()]
            assert operation["responses"], (path, method)
    refs = {ref.split("/")[-1] for ref in _refs(document)}
    assert refs <= set(document["components"]["schemas"])


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


# -- the ops CLI ----------------------------------------------------------------------------------
def finish_later(svc, sync_id: str, status: str, delay: float = 0.3) -> threading.Thread:
    """End a sync from another thread, as a worker would, while the CLI waits."""

    def end():
        time.sleep(delay)
        if status == "succeeded":
            finish_sync(svc, sync_id, [("1", "ada"), ("2", "bob")])
        else:
            svc.store.fail(sync_id, status, "token_revoked", "revoked")

    thread = threading.Thread(target=end, daemon=True)
    thread.start()
    return thread


def test_cli_syncs_show_of_an_unknown_sync_fails_with_a_message(http_runner):
    result = http_runner.invoke(args=["syncs", "show", "s_nope"])
    assert result.exit_code == 1 and "no sync 's_nope'" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["resync"],
        ["resync", "u-1", "--stale-after", "24h"],
        ["resync", "--stale-after", "soon"],
        ["resync", "--stale-after", "24h", "--wait"],
        ["resync", "u-1", "--provider", "myspace"],
        ["resync", "bad user"],
        ["syncs", "list", "--status", "sleeping"],
    ],
)
def test_cli_usage_errors_exit_2(http_runner, args):
    result = http_runner.invoke(args=args)
    assert result.exit_code == 2, result.output


def test_cli_resync_without_linked_accounts_fails(http_runner, svc):
    result = http_runner.invoke(args=["resync", new_user()])
    assert result.exit_code == 1 and "no linked accounts" in result.output
    result = http_runner.invoke(args=["resync", new_user(), "--provider", "github"])
    assert result.exit_code == 1 and "not started" in result.output
    assert recent_sync_ids(svc) == []


def test_cli_resync_starts_every_linked_provider(http_runner, svc):
    user = new_user()
    link(svc, user, "github")
    link(svc, user, "mastodon")
    result = http_runner.invoke(args=["resync", user])
    assert result.exit_code == 0, result.output
    for provider in ("github", "mastodon"):  # every relation: each its own sync
        for relation in ("followers", "following"):
            assert f"{provider} {relation}: queued s_" in result.output
    records = [svc.store.get_sync(sync_id) for sync_id in recent_sync_ids(svc)]
    assert sorted(r["provider"] for r in records) == ["github"] * 2 + ["mastodon"] * 2
    assert {r["trigger"] for r in records} == {"cli"}
    shown = http_runner.invoke(args=["syncs", "show", records[0]["sync_id"]])
    assert shown.exit_code == 0 and "status" in shown.output and "queued" in shown.output
    listed = http_runner.invoke(args=["syncs", "list", "--status", "queued", "--queue", "normal"])
    assert listed.exit_code == 0 and records[1]["sync_id"] in listed.output
    as_json = http_runner.invoke(args=["syncs", "show", "--json", records[0]["sync_id"]])
    assert json.loads(as_json.output)["user_id"] == user


def test_cli_resync_takes_a_mode(http_runner, svc):
    user = new_user()
    link(svc, user, "github")
    refused = http_runner.invoke(args=["resync", user, "--mode", "sometimes"])
    assert refused.exit_code == 2 and "--mode" in refused.output
    assert recent_sync_ids(svc) == []
    result = http_runner.invoke(args=["resync", user, "--relation", "followers", "--mode", "full"])
    assert result.exit_code == 0, result.output
    (record,) = [svc.store.get_sync(sync_id) for sync_id in recent_sync_ids(svc)]
    assert record["mode_requested"] == "full"


def test_cli_resync_wait_exits_0_when_the_sync_succeeds(http_runner, svc):
    user = new_user()
    link(svc, user)
    one = ["resync", user, "--provider", "github", "--relation", "followers"]
    started = http_runner.invoke(args=one)
    sync_id = started.output.split()[3]
    svc.store.update(sync_id, expected_total=2)
    finish_later(svc, sync_id, "succeeded")
    result = http_runner.invoke(args=[*one, "--wait", "--poll-interval", "0.05"])
    assert result.exit_code == 0, result.output
    assert f"github followers: inflight {sync_id}" in result.output
    assert "connections=2/2" in result.output and "github followers: succeeded" in result.output


@pytest.mark.parametrize("status", ["failed", "needs_reauth"])
def test_cli_resync_wait_exits_1_when_the_sync_fails(http_runner, svc, status):
    user = new_user()
    link(svc, user)
    started = http_runner.invoke(args=["resync", user, "--relation", "followers"])
    finish_later(svc, started.output.split()[3], status)
    result = http_runner.invoke(
        args=["resync", user, "--relation", "followers", "--wait", "--poll-interval", "0.05"]
    )
    assert result.exit_code == 1, result.output
    assert f"github followers: {status}: token_revoked: revoked" in result.output


def test_cli_resync_wait_gives_up_after_its_timeout(http_runner, svc):
    user = new_user()
    link(svc, user)
    result = http_runner.invoke(
        args=["resync", user, "--wait", "--timeout", "1", "--poll-interval", "0.1"]
    )
    assert result.exit_code == 1 and "still running" in result.output


def test_cli_resync_stale_resyncs_the_stalest_on_the_trickle_queue(http_app, http_runner, svc):
    users = [new_user() for _ in range(3)]
    for user in users:
        link(svc, user)
        ticket = svc.store.begin_sync(
            user_id=user,
            provider="github",
            relation="followers",
            account_id="a",
            queue="normal",
            trigger="api",
            force=False,
            freshness_s=0,
            stale_s=3600,
        )
        finish_sync(svc, ticket.sync_id, [("1", "ada")])
    # every network of this session was verified minutes ago
    nothing = http_runner.invoke(args=["resync", "--stale-after", "7d"])
    assert nothing.exit_code == 0 and "no network" in nothing.output
    # the session's database holds every test's networks: these three are made the
    # stalest verified of all (1970), in the order they were synced
    with svc.networks.pool.connection() as conn:
        for n, user in enumerate(users):
            conn.execute(
                "UPDATE networks SET verified_at = to_timestamp(%s) WHERE user_id = %s",
                (n, user),
            )
    before = set(recent_sync_ids(svc))
    result = http_runner.invoke(
        args=["resync", "--stale-after", "0s", "--limit", "2", "--provider", "github", "--force"]
    )
    assert result.exit_code == 0, result.output
    assert "queued=2" in result.output
    started = [svc.store.get_sync(s) for s in set(recent_sync_ids(svc)) - before]
    assert sorted(r["user_id"] for r in started) == sorted(users[:2])  # stalest first
    assert {(r["trigger"], r["queue"]) for r in started} == {("stale", "trickle")}
    assert {r["mode_requested"] for r in started} == {"full"}  # verifying syncs
    # bulk work waits in a lower-priority list of the trickle queue; the gauge counts it
    metrics = http_app.test_client().get("/metrics").get_data(as_text=True)
    assert 'netsync_queue_length{queue="trickle"} 2.0' in metrics


# -- secrets stay secret ----------------------------------------------------------------------------
def test_tokens_never_appear_in_logs_or_answers(http_client, svc, caplog):
    caplog.set_level(logging.DEBUG)
    user = new_user()
    secret_account = account(
        "twitter",
        access_token="tok-SECRET-access",
        refresh_token="tok-SECRET-refresh",
        token_secret="tok-SECRET-oauth1",
    )
    bodies = [
        login_body(user, secret_account),
        login_body(user, secret_account, account("myspace")),
        json.dumps(
            {"user_id": user, "accounts": [{**secret_account, "account_id": None}]}
        ).encode(),
        json.dumps({"user_id": user, "accounts": [{**secret_account, "expires_at": "x"}]}).encode(),
    ]
    answers = [post_login(http_client, body) for body in bodies]
    answers.append(post_login(http_client, bodies[0], secret="wrong"))
    answers.append(
        http_client.get("/v1/syncs/x", headers={"Authorization": "Bearer tok-SECRET-api"})
    )
    ticket = answers[0].get_json()["syncs"][0]
    answers.append(http_client.get(ticket["status_url"], headers=BEARER))
    logging.getLogger("providers.twitter").warning(
        "GET /1.1/followers?access_token=tok-SECRET-1 Authorization: Bearer tok-SECRET-2 "
        'oauth_token="tok-SECRET-3" {"refresh_token": "tok-SECRET-4"}'
    )
    for response in answers:
        assert b"tok-SECRET" not in response.data
    assert "tok-SECRET" not in caplog.text
    assert "[redacted]" in caplog.text


def test_the_line_format_is_key_value_and_redacts_extras():
    record = logging.LogRecord(
        "netsync.test", logging.INFO, __file__, 1, "sync started sync=%s", ("s_1",), None
    )
    record.access_token = "tok-SECRET"
    record.user_id = "u 1"
    line = observability.KeyValueFormatter().format(record)
    assert line.startswith("ts=") and "level=info" in line and "logger=netsync.test" in line
    assert 'msg="sync started sync=s_1"' in line and 'user_id="u 1"' in line
    assert "tok-SECRET" not in line and "\n" not in line


def test_sentry_events_drop_expected_errors_and_lose_their_tokens():
    class RateLimited(Exception):
        expected = True

    error = RateLimited("429")
    assert (
        observability.before_send({"message": "x"}, {"exc_info": (RateLimited, error, None)})
        is None
    )
    event = {
        "request": {
            "headers": {"Authorization": "Bearer tok-SECRET", "X-Netsync-Signature": "t=1,v1=ab"},
            "query_string": "access_token=tok-SECRET&page=2",
        },
        "extra": {"credential": "tok-SECRET", "note": "Bearer tok-SECRET"},
        "breadcrumbs": {"values": [{"message": "oauth_token=tok-SECRET"}]},
    }
    scrubbed = observability.before_send(event, {"exc_info": (ValueError, ValueError("x"), None)})
    assert "tok-SECRET" not in json.dumps(scrubbed)
    assert scrubbed["request"]["query_string"] == "access_token=[redacted]&page=2"


def test_sentry_starts_only_with_a_dsn_and_without_pii(monkeypatch):
    import sentry_sdk

    calls = []
    monkeypatch.setattr(sentry_sdk, "init", lambda **options: calls.append(options))
    settings = load_settings({})
    assert observability.init_sentry(settings) is False and calls == []
    assert observability.init_sentry(replace(settings, sentry_dsn="https://k@sentry.invalid/1"))
    (options,) = calls
    assert options["send_default_pii"] is False
    assert options["include_local_variables"] is False
    assert options["max_request_body_size"] == "never"
    assert options["before_send"] is observability.before_send
    assert {type(i).__name__ for i in options["integrations"]} == {
        "FlaskIntegration",
        "CeleryIntegration",
    }
