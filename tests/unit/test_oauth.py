"""requests-oauthlib glue: sessions, the one refresh per token, OAuth 1.0a, plain HTTP.

The network is a transport adapter on the thread's connection pool
(``sync.http.session()``), which every OAuth session borrows; the
credential store and the refresh lock are a real Redis. Plain HTTP is allowed
by the environment (``OAUTHLIB_INSECURE_TRANSPORT``, as ``devtools.devstack``
sets it for the simulator), never by ``sync.oauth``.
"""

from __future__ import annotations

import json
import os
import time
from types import SimpleNamespace
from urllib.parse import parse_qsl

import pytest
import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from providers.errors import Action, ProviderCallError
from providers.github import GitHub
from providers.linkedin import LinkedIn
from providers.provider import HttpCall
from providers.twitter import Twitter
from service.config import DEV_ENCRYPTION_KEY, Settings
from state.credentials import Credential, CredentialStore
from state.store import SyncStore
from sync import http, oauth

#: state against a real Redis: also run on a Redis Cluster (make integration-cluster)
pytestmark = pytest.mark.cluster

TIMEOUT = (1.0, 1.0)
PLAIN_HTTP_OAUTH = "OAUTHLIB_INSECURE_TRANSPORT"


class FakeTransport(BaseAdapter):
    """Answers by (method, path): a list of (status, body) served in order, last one repeated."""

    def __init__(self, routes):
        super().__init__()
        self.routes = {k: list(v) for k, v in routes.items()}
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request, **kwargs):
        self.sent.append(request)
        path = request.path_url.partition("?")[0]
        answers = self.routes[(request.method, path)]
        status, body = answers.pop(0) if len(answers) > 1 else answers[0]
        response = requests.Response()
        response.status_code = status
        response._content = json.dumps(body).encode()
        response.headers = CaseInsensitiveDict({"Content-Type": "application/json"})
        response.url, response.request = request.url, request
        return response

    def close(self):
        pass

    def calls(self, method, path):
        return [r for r in self.sent if r.method == method and r.path_url.partition("?")[0] == path]


@pytest.fixture
def transport(monkeypatch):
    def install(routes):
        fake = FakeTransport(routes)
        sess = requests.Session()
        sess.mount("https://", fake)
        sess.mount("http://", fake)
        monkeypatch.setattr(http._local, "session", sess, raising=False)
        return fake

    return install


@pytest.fixture
def simulator_env(monkeypatch):
    """The environment of a process whose providers are the simulator (http://127.0.0.1)."""
    monkeypatch.setenv(PLAIN_HTTP_OAUTH, "1")


@pytest.fixture
def production_env(monkeypatch):
    monkeypatch.delenv(PLAIN_HTTP_OAUTH, raising=False)


@pytest.fixture
def make_ctx(redis_client, key_prefix):
    def make(provider, credential, clients=None):
        settings = Settings(oauth_clients=clients or {})
        svc = SimpleNamespace(
            settings=settings,
            redis=redis_client,
            store=SyncStore(redis_client, key_prefix),
            credentials=CredentialStore(redis_client, key_prefix, (DEV_ENCRYPTION_KEY,)),
        )
        svc.credentials.save(provider.NAME, "u1", credential)
        return SimpleNamespace(svc=svc, provider=provider, user_id="u1", credential=credential)

    return make


PROFILE = ("GET", "/2/users/7")
TW_TOKEN = ("POST", "/2/oauth2/token")
LI_TOKEN = ("POST", "/linkedin/oauth/v2/accessToken")  # beside a custom base URL
NEW_TOKEN = {
    "token_type": "bearer",
    "access_token": "at-2",
    "refresh_token": "rt-2",
    "expires_in": 7200,
}


def twitter_call(twitter):
    return twitter.profile_call("7")


def test_bearer_provider_sends_a_plain_header(transport, make_ctx):
    fake = transport({("GET", "/users/x"): [(200, {"followers": 1})]})
    ctx = make_ctx(GitHub("https://api.github.com"), Credential("x", "gh-token"))
    answer = oauth.send(ctx, HttpCall("GET", "https://api.github.com/users/x"), {}, TIMEOUT)
    assert answer.status == 200 and fake.sent[0].headers["Authorization"] == "Bearer gh-token"


def test_oauth2_session_sends_the_bearer_token(transport, make_ctx):
    fake = transport({PROFILE: [(200, {"data": {}})]})
    twitter = Twitter("https://api.twitter.com")
    ctx = make_ctx(twitter, Credential("7", "at-1", expires_at=time.time() + 3600))
    oauth.send(ctx, twitter_call(twitter), {}, TIMEOUT)
    assert fake.sent[0].headers["Authorization"] == "Bearer at-1"
    assert fake.sent[0].url.endswith("/2/users/7?user.fields=public_metrics")


def test_expired_token_refreshes_client_side_once_and_writes_back(transport, make_ctx):
    fake = transport({PROFILE: [(200, {"data": {}})], TW_TOKEN: [(200, NEW_TOKEN)]})
    twitter = Twitter("https://api.twitter.com")
    ctx = make_ctx(
        twitter,
        Credential("7", "at-1", "rt-1", expires_at=time.time() - 5),
        clients={"twitter": "cid:csecret"},
    )
    oauth.send(ctx, twitter_call(twitter), {}, TIMEOUT)
    (refresh,) = fake.calls(*TW_TOKEN)
    form = dict(parse_qsl(refresh.body))
    assert form == {"grant_type": "refresh_token", "refresh_token": "rt-1", "client_id": "cid"}
    assert refresh.headers["Authorization"].startswith("Basic ")  # confidential client
    assert fake.calls(*PROFILE)[0].headers["Authorization"] == "Bearer at-2"
    stored = ctx.svc.credentials.load("twitter", "u1")
    assert (stored.access_token, stored.refresh_token) == ("at-2", "rt-2")
    assert stored.expires_at > time.time() + 7000


def test_linkedin_refresh_sends_client_credentials_in_the_body(transport, make_ctx, simulator_env):
    fake = transport({LI_TOKEN: [(200, {"access_token": "li-2", "expires_in": 5184000})]})
    linkedin = LinkedIn("http://127.0.0.1:9/linkedin")
    ctx = make_ctx(linkedin, Credential("me", "li-1", "li-rt"), clients={"linkedin": "cid:csecret"})
    assert oauth.refresh_after_rejection(ctx, TIMEOUT) == "refreshed"
    (refresh,) = fake.calls(*LI_TOKEN)
    form = dict(parse_qsl(refresh.body))
    assert form == {
        "grant_type": "refresh_token",
        "refresh_token": "li-rt",
        "client_id": "cid",
        "client_secret": "csecret",
    }
    stored = ctx.svc.credentials.load("linkedin", "u1")
    assert (
        stored.access_token == "li-2" and stored.refresh_token == "li-rt"
    )  # kept when not rotated


def test_server_side_rejection_refreshes_once_across_sibling_tasks(transport, make_ctx):
    fake = transport({TW_TOKEN: [(200, NEW_TOKEN)]})
    twitter = Twitter("https://api.twitter.com")
    old = Credential("7", "at-1", "rt-1")
    first = make_ctx(twitter, old, clients={"twitter": "cid:s"})
    sibling = SimpleNamespace(**{**vars(first)})  # another page task that used the same token
    assert oauth.refresh_after_rejection(first, TIMEOUT) == "refreshed"
    assert oauth.refresh_after_rejection(sibling, TIMEOUT) == "refreshed"
    assert len(fake.calls(*TW_TOKEN)) == 1  # the sibling adopted the new token


def test_refresh_in_progress_elsewhere_is_busy(transport, make_ctx):
    fake = transport({TW_TOKEN: [(200, NEW_TOKEN)]})
    twitter = Twitter("https://api.twitter.com")
    ctx = make_ctx(twitter, Credential("7", "at-1", "rt-1"), clients={"twitter": "cid:s"})
    keeper = oauth.TokenKeeper(ctx)
    ctx.svc.redis.set(keeper.lock_key, "1", ex=30)
    assert oauth.refresh_after_rejection(ctx, TIMEOUT) == "busy"
    assert fake.sent == []


def test_refused_refresh_is_impossible(transport, make_ctx):
    transport(
        {
            TW_TOKEN: [
                (
                    400,
                    {
                        "error": "invalid_request",
                        "error_description": "Value passed for the token was invalid.",
                    },
                )
            ]
        }
    )
    twitter = Twitter("https://api.twitter.com")
    ctx = make_ctx(twitter, Credential("7", "at-1", "rt-1"), clients={"twitter": "cid:s"})
    assert oauth.refresh_after_rejection(ctx, TIMEOUT) == "impossible"
    assert ctx.svc.credentials.load("twitter", "u1").access_token == "at-1"


def test_token_endpoint_outage_backs_off(transport, make_ctx):
    transport({TW_TOKEN: [(503, {"title": "Service Unavailable"})]})
    twitter = Twitter("https://api.twitter.com")
    ctx = make_ctx(twitter, Credential("7", "at-1", "rt-1"), clients={"twitter": "cid:s"})
    with pytest.raises(ProviderCallError) as caught:
        oauth.refresh_after_rejection(ctx, TIMEOUT)
    assert caught.value.error.action is Action.BACKOFF
    assert not ctx.svc.redis.exists(oauth.TokenKeeper(ctx).lock_key)  # a later attempt may retry


@pytest.mark.parametrize(
    "credential,clients",
    [
        (Credential("7", "at-1"), {"twitter": "cid:s"}),  # no refresh token
        (Credential("7", "at-1", "rt-1"), {}),  # no client credentials
        (Credential("7", "at-1", token_secret="ts"), {"twitter": "k:s"}),  # OAuth 1.0a
    ],
)
def test_refresh_impossible(transport, make_ctx, credential, clients):
    fake = transport({})
    ctx = make_ctx(Twitter("https://api.twitter.com"), credential, clients=clients)
    assert oauth.refresh_after_rejection(ctx, TIMEOUT) == "impossible"
    assert fake.sent == []


def test_expired_token_without_refresh_is_reauth_without_a_call(transport, make_ctx):
    fake = transport({})
    twitter = Twitter("https://api.twitter.com")
    ctx = make_ctx(twitter, Credential("7", "at-1", expires_at=time.time() - 5))
    with pytest.raises(ProviderCallError) as caught:
        oauth.send(ctx, twitter_call(twitter), {}, TIMEOUT)
    assert (
        caught.value.error.action is Action.REAUTH
        and caught.value.error.rule.kind == "token_expired"
    )
    assert fake.sent == []


def test_oauth1_signs_with_the_consumer_key(transport, make_ctx):
    fake = transport({PROFILE: [(200, {"data": {}})]})
    twitter = Twitter("https://api.twitter.com")
    ctx = make_ctx(
        twitter,
        Credential("7", "tok-1", token_secret="secret-1"),
        clients={"twitter": "consumer:consumer-secret"},
    )
    oauth.send(ctx, twitter_call(twitter), {}, TIMEOUT)
    header = fake.sent[0].headers["Authorization"]
    header = header.decode() if isinstance(header, bytes) else header
    assert header.startswith("OAuth ") and 'oauth_token="tok-1"' in header
    assert 'oauth_consumer_key="consumer"' in header and "oauth_signature=" in header
    assert "secret-1" not in header and "consumer-secret" not in header


def test_oauth1_without_consumer_key_fails(transport, make_ctx):
    transport({})
    ctx = make_ctx(Twitter("https://api.twitter.com"), Credential("7", "tok-1", token_secret="s"))
    with pytest.raises(ProviderCallError) as caught:
        oauth.send(ctx, twitter_call(ctx.provider), {}, TIMEOUT)
    assert caught.value.error.action is Action.FAIL


def test_plain_http_is_refused_where_the_environment_does_not_allow_it(
    transport, make_ctx, production_env
):
    """Production (https, the variable unset): a plain-HTTP call or refresh, even to a
    loopback address, fails the sync before anything is sent."""
    fake = transport({})
    twitter = Twitter("http://127.0.0.1:9")
    ctx = make_ctx(twitter, Credential("7", "at-1", "rt-1"), clients={"twitter": "cid:s"})
    with pytest.raises(ProviderCallError) as call:
        oauth.send(ctx, twitter_call(twitter), {}, TIMEOUT)
    with pytest.raises(ProviderCallError) as refresh:
        oauth.refresh_after_rejection(ctx, TIMEOUT)
    for caught in (call, refresh):
        assert caught.value.error.rule.kind == "insecure_transport"
        assert caught.value.error.action is Action.FAIL
    assert fake.sent == []


def test_the_simulator_environment_lets_plain_http_through(transport, make_ctx, simulator_env):
    fake = transport({PROFILE: [(200, {"data": {}})], TW_TOKEN: [(200, NEW_TOKEN)]})
    twitter = Twitter("http://127.0.0.1:9")
    ctx = make_ctx(twitter, Credential("7", "at-1", "rt-1"), clients={"twitter": "cid:s"})
    oauth.send(ctx, twitter_call(twitter), {}, TIMEOUT)
    assert oauth.refresh_after_rejection(ctx, TIMEOUT) == "refreshed"
    assert [r.url.partition("?")[0] for r in fake.sent] == [
        "http://127.0.0.1:9/2/users/7",
        "http://127.0.0.1:9/2/oauth2/token",
    ]


@pytest.mark.parametrize("setting", [None, "1"])
def test_calls_leave_the_process_environment_as_it_was(transport, make_ctx, monkeypatch, setting):
    """The variable is process-wide and worker threads share it: no call sets or
    removes it, whatever the URL, not even while it is in flight."""
    if setting is None:
        monkeypatch.delenv(PLAIN_HTTP_OAUTH, raising=False)
    else:
        monkeypatch.setenv(PLAIN_HTTP_OAUTH, setting)
    fake = transport({PROFILE: [(200, {"data": {}})], TW_TOKEN: [(200, NEW_TOKEN)]})
    sent, in_flight = fake.send, []

    def send(request, **kwargs):
        in_flight.append(os.environ.get(PLAIN_HTTP_OAUTH))
        return sent(request, **kwargs)

    fake.send = send
    for base in ("https://api.twitter.com", "http://127.0.0.1:9", "http://api.example.com"):
        twitter = Twitter(base)
        ctx = make_ctx(twitter, Credential("7", "at-1", "rt-1"), clients={"twitter": "cid:s"})
        try:
            oauth.send(ctx, twitter_call(twitter), {}, TIMEOUT)
            oauth.refresh_after_rejection(ctx, TIMEOUT)
        except ProviderCallError as exc:  # plain HTTP where the environment refuses it
            assert exc.error.rule.kind == "insecure_transport" and setting is None
        assert os.environ.get(PLAIN_HTTP_OAUTH) == setting
    assert in_flight and set(in_flight) == {setting}


def test_a_refused_refresh_keeps_its_lock(transport, make_ctx):
    """A sibling that meets the same refused token does not try the refresh again."""
    transport({TW_TOKEN: [(400, {"error": "invalid_grant"})]})
    twitter = Twitter("https://api.twitter.com")
    ctx = make_ctx(twitter, Credential("7", "at-1", "rt-1"), clients={"twitter": "cid:s"})
    assert oauth.refresh_after_rejection(ctx, TIMEOUT) == "impossible"
    assert oauth.refresh_after_rejection(ctx, TIMEOUT) == "busy"


def test_token_endpoint_unreachable_is_a_transport_error(make_ctx, monkeypatch):
    class Down(BaseAdapter):
        def send(self, request, **kwargs):
            raise requests.ConnectionError("refused")

        def close(self):
            pass

    sess = requests.Session()
    sess.mount("https://", Down())
    monkeypatch.setattr(http._local, "session", sess, raising=False)
    ctx = make_ctx(
        Twitter("https://api.twitter.com"),
        Credential("7", "at-1", "rt-1"),
        clients={"twitter": "cid:s"},
    )
    with pytest.raises(ProviderCallError) as caught:
        oauth.refresh_after_rejection(ctx, TIMEOUT)
    assert caught.value.error.action is Action.BACKOFF
