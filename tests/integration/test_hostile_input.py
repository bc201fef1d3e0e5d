"""Hand-written hostile input against the web app: each is a clear JSON error, and
nothing is written (no credential, no sync record, no index entry)."""

from __future__ import annotations

import http.client
import json
import time
from urllib.parse import urlsplit

import pytest

from providers import provider_classes
from tests.integration.conftest import new_user
from tests.integration.conftest_http import (
    BEARER,
    account,
    login_body,
    post_login,
    recent_sync_ids,
    signed_headers,
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


HOSTILE_IDS = [
    "../../users/victim",
    "octo/../victim",
    "octo/followers",
    "..",
    ".",
    "%2e%2e",
    "octo?page=2",
    "octo#x",
    "a\x00b",
    "a\nb",
    "a\tb",
    " octo",
    "\ud800",
    "ü",
    "octo\u202e",
    "x" * 65,
    "",
]


@pytest.mark.parametrize("provider", sorted(provider_classes()))
@pytest.mark.parametrize("account_id", HOSTILE_IDS)
def test_hostile_account_ids_are_refused_before_anything_is_written(
    http_client, svc, provider, account_id
):
    user = new_user()
    body = json.dumps(
        {
            "user_id": user,
            "accounts": [
                account("mastodon" if provider != "mastodon" else "github"),  # a good one first
                account(provider, account_id=account_id),
            ],
        }
    ).encode()
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


@pytest.mark.parametrize(
    "body, status",
    [
        (b"\xff\xfe{\x00}", 400),  # not UTF-8
        (b'{"user_id": "u-a", "user_id": "u-b", "accounts": []}', 400),  # duplicate key
        (b'{"user_id": "u-a", "accounts": [{"provider": "github", "provider": "x"}]}', 400),
        (b'{"user_id": "u-a", "accounts": [' + b"1" * 5000 + b"]}", 400),  # past the digit limit
        (
            b'{"user_id": "u-a", "accounts": [{"provider": "github", "account_id": "octo", '
            b'"access_token": "t", "expires_at": 1e400}]}',
            422,
        ),  # infinity
        (
            b'{"user_id": "u-a", "accounts": [{"provider": "github", "account_id": "octo", '
            b'"access_token": "t", "expires_at": ' + b"9" * 400 + b"}]}",
            422,
        ),  # a huge integer
        (b'{"a":' * 5000 + b"1" + b"}" * 5000, 400),  # deeply nested objects
        (b"[" * 100_000 + b"]" * 100_000, 413),  # nested and too large
        (b'{"user_id": "u-a\\u0000", "accounts": []}', 422),  # a control character
    ],
)
def test_hostile_bodies_are_clear_errors(http_client, svc, body, status):
    response = post_login(http_client, body)
    assert response.status_code == status, response.get_data()[:300]
    assert response.is_json
    assert recent_sync_ids(svc) == []


@pytest.mark.parametrize(
    "header",
    [
        "",
        " ",
        "t=",
        "v1=",
        "t=1",
        "v1=abc",
        "t=abc,v1=00",
        "t=-5,v1=00",
        "t=1.5,v1=00",
        "t=\u0661\u0662,v1=00",
        "t=%d,t=%d,v1=00",
        "t=%d,v1=" + "0" * 64,
        "t=%d,v1=" + "ï" * 64,
        "t=%d," + ",".join(["v1=00"] * 9),
        "t=%d,v1",
        "x" * 5000,
        "T=%d,V1=%s",
        "t=%d;v1=%s",
        "t=%d,v1=%s,v1=%s",
        "t=99999999999999999999,v1=00",
    ],
)
def test_every_signature_header_variant_is_refused(http_client, svc, header):
    user = new_user()
    body = login_body(user)
    now = int(time.time())
    good = signed_headers(body)["X-Netsync-Signature"].split("v1=")[1]
    value = (
        header.replace("%d", str(now), 2)
        .replace("%s", good.upper() if "V1" in header else good, 1)
        .replace("%s", "00")
    )
    if header == "t=%d,v1=%s,v1=%s":
        value = f"t={now + 1},v1={good},v1={good}"  # the right HMAC for another timestamp
    response = http_client.post(
        "/webhooks/login",
        data=body,
        headers={"Content-Type": "application/json", "X-Netsync-Signature": value},
    )
    assert response.status_code == 401, (header, response.get_json())
    assert error_code(response) == "bad_signature"
    assert_nothing_written(svc, user)


def test_a_chunked_body_over_the_limit_is_413_not_cut(live_server, svc):
    user = new_user()
    body = login_body(user, account(access_token="t" * 70_000))
    headers = signed_headers(body)
    parts = urlsplit(live_server)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    chunks = (body[i : i + 8192] for i in range(0, len(body), 8192))
    connection.request(
        "POST",
        "/webhooks/login",
        body=chunks,
        headers={**headers, "Transfer-Encoding": "chunked"},
        encode_chunked=True,
    )
    response = connection.getresponse()
    answer = json.loads(response.read())
    assert response.status == 413 and answer["error"]["code"] == "too_large", answer
    assert_nothing_written(svc, user)


def test_a_chunked_body_under_the_limit_is_read_whole(live_server, svc):
    user = new_user()
    body = login_body(user)
    parts = urlsplit(live_server)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    connection.request(
        "POST",
        "/webhooks/login",
        body=iter([body[:10], body[10:]]),
        headers={**signed_headers(body), "Transfer-Encoding": "chunked"},
        encode_chunked=True,
    )
    response = connection.getresponse()
    assert response.status == 202, response.read()


# -- the network reads' query parameters: each was a 500 (after: make fuzz; limit: by hand)
PAGED_READS = [
    "/v1/changes",
    "/v1/users/{user}/networks/github",
    "/v1/users/{user}/networks/github/following",
    "/v1/users/{user}/networks/github/changes",
    "/v1/users/{user}/networks/github/following/changes",
    "/v1/users/{user}/networks/github/following/members",
]


def feed_size(svc) -> int:
    return len(svc.networks.feed(0, 1000)[0])


@pytest.mark.parametrize("path", PAGED_READS)
@pytest.mark.parametrize(
    "limit",
    [
        "--5",
        "--1",
        "-",
        "+5",
        " 5",
        "5 ",
        "1_0",
        "1e3",
        "0x10",
        "\u0661",
        "５",
        "5\x00",
        "12345678901",
    ],
)
def test_a_limit_that_is_not_one_plain_integer_is_400(http_client, svc, path, limit):
    user = new_user()
    before = feed_size(svc)
    response = http_client.get(
        path.format(user=user), query_string={"limit": limit}, headers=BEARER
    )
    assert response.status_code == 400, (limit, response.get_data()[:300])
    assert error_code(response) == "malformed"
    assert "limit" in response.get_json()["error"]["message"]
    assert_nothing_written(svc, user)
    assert feed_size(svc) == before


@pytest.mark.parametrize(
    "limit, status",
    [("-5", 422), ("0", 422), ("1001", 422), ("1", 200), ("1000", 200), ("-1234567890", 422)],
)
def test_a_plain_integer_limit_is_checked_for_its_range(http_client, limit, status):
    response = http_client.get("/v1/changes", query_string={"limit": limit}, headers=BEARER)
    assert response.status_code == status, response.get_data()[:300]
    assert response.is_json


@pytest.mark.parametrize("after", [str(2**63), "9" * 19, "-1", "1.0", "\u0661", "1" * 20])
def test_a_feed_cursor_past_a_bigint_or_not_digits_is_400(http_client, svc, after):
    before = feed_size(svc)
    response = http_client.get("/v1/changes", query_string={"after": after}, headers=BEARER)
    assert response.status_code == 400, (after, response.get_data()[:300])
    assert error_code(response) == "malformed"
    assert feed_size(svc) == before


def test_the_largest_bigint_is_a_feed_cursor(http_client):
    response = http_client.get(
        "/v1/changes", query_string={"after": str(2**63 - 1)}, headers=BEARER
    )
    assert response.status_code == 200, response.get_data()[:300]
    assert response.get_json() == {"changes": [], "next_cursor": str(2**63 - 1)}
