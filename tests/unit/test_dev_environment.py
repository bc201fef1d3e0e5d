"""The dev environment's one setting for plain-HTTP OAuth (``devtools.devstack``):
set for processes whose providers are the local simulator, never otherwise."""

from __future__ import annotations

import pytest

from devtools.devstack import PLAIN_HTTP_OAUTH_VAR, allow_plain_http_oauth


@pytest.mark.parametrize(
    "urls",
    [
        {"TWITTER_API_URL": "http://127.0.0.1:8900/twitter"},
        {"LINKEDIN_API_URL": "http://localhost:8900/linkedin", "GITHUB_API_URL": "https://x.y"},
        {"MASTODON_API_URL": "HTTP://[::1]:8900/mastodon"},
    ],
)
def test_set_when_the_plain_http_providers_are_the_simulator(urls):
    env = dict(urls)
    allow_plain_http_oauth(env)
    assert env[PLAIN_HTTP_OAUTH_VAR] == "1"


@pytest.mark.parametrize(
    "urls",
    [
        {},  # the real providers (https)
        {"TWITTER_API_URL": "https://api.twitter.com"},
        {"TWITTER_API_URL": "http://api.example.com"},
        {"TWITTER_API_URL": "http://127.0.0.1:8900/twitter", "LINKEDIN_API_URL": "http://10.0.0.1"},
    ],
)
def test_not_set_for_real_or_remote_providers(urls):
    env = dict(urls)
    allow_plain_http_oauth(env)
    assert PLAIN_HTTP_OAUTH_VAR not in env


def test_an_operators_own_setting_stays():
    env = {"TWITTER_API_URL": "http://127.0.0.1:1", PLAIN_HTTP_OAUTH_VAR: ""}
    allow_plain_http_oauth(env)
    assert env[PLAIN_HTTP_OAUTH_VAR] == ""
