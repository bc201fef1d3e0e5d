"""Account ids: validated per provider, and one path segment in every call anyway."""

from __future__ import annotations

import pytest
import requests

from providers import provider_classes

BASE = "https://api.example.test/base"
HOSTILE = [
    "../../victim",
    "octo/../../victim",
    "..",
    ".",
    "a/b",
    "a?b=1",
    "a#b",
    "a%2Fb",
    "%2e%2e",
    "a b",
    "\ud800",
    "a\x00b",
]


def prepared_urls(cls, account_id):
    provider = cls(BASE)
    calls = [provider.profile_call(account_id)]
    for cursor in provider.initial_cursors(account_id, 1000)[:2]:
        calls.append(provider.page_call(account_id, cursor))
    urls = []
    for call in calls:
        request = requests.Request(call.method, call.url, params=call.params).prepare()
        urls.append(request.url)
    return urls


@pytest.mark.parametrize("name", sorted(provider_classes()))
@pytest.mark.parametrize("account_id", HOSTILE)
def test_hostile_ids_are_refused_by_every_provider(name, account_id):
    assert not provider_classes()[name].valid_account_id(account_id)


@pytest.mark.parametrize("name", sorted(provider_classes()))
@pytest.mark.parametrize("account_id", [i for i in HOSTILE[:9] if i not in (".", "..")])
def test_no_call_leaves_the_account_resource_even_unvalidated(name, account_id):
    """Defence in depth: an id that got past validation is still one encoded segment."""
    for url in prepared_urls(provider_classes()[name], account_id):
        path = url.split("?", 1)[0]
        assert path.startswith(BASE + "/"), url
        assert "/../" not in path and not path.endswith("/..") and "/./" not in path, url
        assert "victim" not in path.split("/") and "b" not in path.split("/"), url


@pytest.mark.parametrize(
    "name, account_id",
    [
        ("github", "octocat"),
        ("github", "a-b-c"),
        ("github", "x" * 39),
        ("twitter", "2244994945"),
        ("facebook", "10150145806225128"),
        ("mastodon", "109302"),
        ("linkedin", "abc_DEF-123"),
        ("bluesky", "alan.bsky.social"),
        ("bluesky", "did:plc:z72i7hdynmk6r22z27h6tvur"),
    ],
)
def test_real_ids_are_accepted(name, account_id):
    assert provider_classes()[name].valid_account_id(account_id)


@pytest.mark.parametrize("account_id", ["-octo", "octo-", "oc--to", "x" * 40, "oc_to"])
def test_github_logins_follow_githubs_rules(account_id):
    assert not provider_classes()["github"].valid_account_id(account_id)


@pytest.mark.parametrize("name", sorted(provider_classes()))
@pytest.mark.parametrize("account_id", [".", ".."])
def test_dot_segments_cannot_become_a_call(name, account_id):
    cls = provider_classes()[name]
    if name in ("linkedin", "bluesky"):  # no account in the path: the token's owner / a query
        return
    with pytest.raises(ValueError):
        prepared_urls(cls, account_id)
