"""Hand-written hostile input against the web app: each is a clear JSON error, and
nothing is written (no credential, no sync record, no index entry)."""
from __future__ import annotations

import http.client
import json
import time
from urllib.parse import urlsplit

import pytest

from providers import provider_classes
from tests.integration.conftest_http import (  # noqa: F401  (fixtures)
    account, http_app, http_broker_url, http_client, live_server, login_body, new_user,
    post_login, recent_sync_ids, signed_headers, svc,
)
from tests.integration.test_http_triggers import assert_nothing_started, error_code


def assert_nothing_written(svc, user_id: str) -> None:
    assert_nothing_started(svc, user_id)
    prefix = svc.settings.key_prefix
    assert svc.redis.hlen(f"{prefix}:syncs") == 0  # the sync index either
    assert not list(svc.redis.scan_iter(match=f"{prefix}:{{*:{user_id}}}*"))


def test_a_user_id_with_a_trailing_newline_is_refused(http_client, svc):
    user = new_user()
    response = post_login(http_client, login_body(user + "\n"))
    assert response.status_code == 422 and error_code(response) == "invalid"
    assert_nothing_written(svc, user)


HOSTILE_IDS = ["../../users/victim", "octo/../victim", "octo/followers", "..", ".", "%2e%2e",
               "octo?page=2", "octo#x", "a\x00b", "a\nb", "a\tb", " octo", "\ud800", "ü",
               "octo\u202e", "x" * 65, ""]


@pytest.mark.parametrize("provider", sorted(provider_classes()))
@pytest.mark.parametrize("account_id", HOSTILE_IDS)
def test_hostile_account_ids_are_refused_before_anything_is_written(http_client, svc, provider,
                                                                    account_id):
    user = new_user()
    body = json.dumps({"user_id": user, "accounts": [
        account("mastodon" if provider != "mastodon" else "github"),  # a good one first
        account(provider, account_id=account_id)]}).encode()
    response = post_login(http_client, body)
    assert response.status_code == 422, response.get_json()
    assert error_code(response) in ("invalid_account_id", "missing_field", "invalid")
    assert_nothing_written(svc, user)


@pytest.mark.parametrize("token", ["tok\x00en", "tok\u00e9n", "\ud800", "tok\x7f"])
def test_tokens_that_are_not_printable_ascii_are_refused(http_client, svc, token):
    user = new_user()
    response = post_login(http_client, login_body(user, account(access_token=token)))
    assert response.status_code == 422
    assert_nothing_written(svc, user)


@pytest.mark.parametrize("body, status", [
    (b"\xff\xfe{\x00}", 400),                                   # not UTF-8
    (b'{"user_id": "u-a", "user_id": "u-b", "accounts": []}', 400),  # duplicate key
    (b'{"user_id": "u-a", "accounts": [{"provider": "github", "provider": "x"}]}', 400),
    (b'{"user_id": "u-a", "accounts": [' + b"1" * 5000 + b"]}", 400),  # past the digit limit
    (b'{"user_id": "u-a", "accounts": [{"provider": "github", "account_id": "octo", '
     b'"access_token": "t", "expires_at": 1e400}]}', 422),      # infinity
    (b'{"user_id": "u-a", "accounts": [{"provider": "github", "account_id": "octo", '
     b'"access_token": "t", "expires_at": ' + b"9" * 400 + b"}]}", 422),  # a huge integer
    (b'{"a":' * 5000 + b"1" + b"}" * 5000, 400),                # deeply nested objects
    (b"[" * 100_000 + b"]" * 100_000, 413),                      # nested and too large
    (b'{"user_id": "u-a\\u0000", "accounts": []}', 422),        # a control character
])
def test_hostile_bodies_are_clear_errors(http_client, svc, body, status):
    response = post_login(http_client, body)
    assert response.status_code == status, response.get_data()[:300]
    assert response.is_json
    assert recent_sync_ids(svc) == []


@pytest.mark.parametrize("header", [
    "", " ", "t=", "v1=", "t=1", "v1=abc", "t=abc,v1=00", "t=-5,v1=00", "t=1.5,v1=00",
    "t=\u0661\u0662,v1=00", "t=%d,t=%d,v1=00", "t=%d,v1=" + "0" * 64, "t=%d,v1=" + "ï" * 64,
    "t=%d," + ",".join(["v1=00"] * 9), "t=%d,v1", "x" * 5000, "T=%d,V1=%s", "t=%d;v1=%s",
    "t=%d,v1=%s,v1=%s", "t=99999999999999999999,v1=00",
])
def test_every_signature_header_variant_is_refused(http_client, svc, header):
    user = new_user()
    body = login_body(user)
    now = int(time.time())
    good = signed_headers(body)["X-Netsync-Signature"].split("v1=")[1]
    value = header.replace("%d", str(now), 2).replace("%s", good.upper() if "V1" in header
                                                      else good, 1).replace("%s", "00")
    if header == "t=%d,v1=%s,v1=%s":
        value = f"t={now + 1},v1={good},v1={good}"  # the right HMAC for another timestamp
    response = http_client.post("/webhooks/login", data=body, headers={
        "Content-Type": "application/json", "X-Netsync-Signature": value})
    assert response.status_code == 401, (header, response.get_json())
    assert error_code(response) == "bad_signature"
    assert_nothing_written(svc, user)


def test_a_chunked_body_over_the_limit_is_413_not_cut(live_server, svc):
    user = new_user()
    body = login_body(user, account(access_token="t" * 70_000))
    headers = signed_headers(body)
    parts = urlsplit(live_server)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    chunks = (body[i:i + 8192] for i in range(0, len(body), 8192))
    connection.request("POST", "/webhooks/login", body=chunks,
                       headers={**headers, "Transfer-Encoding": "chunked"}, encode_chunked=True)
    response = connection.getresponse()
    answer = json.loads(response.read())
    assert response.status == 413 and answer["error"]["code"] == "too_large", answer
    assert_nothing_written(svc, user)


def test_a_chunked_body_under_the_limit_is_read_whole(live_server, svc):
    user = new_user()
    body = login_body(user)
    parts = urlsplit(live_server)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    connection.request("POST", "/webhooks/login", body=iter([body[:10], body[10:]]),
                       headers={**signed_headers(body), "Transfer-Encoding": "chunked"},
                       encode_chunked=True)
    response = connection.getresponse()
    assert response.status == 202, response.read()
