"""The registry derives every provider list; a bad provider fact fails at start-up, named."""

from __future__ import annotations

import dataclasses

import pytest

import providers
from providers.github import GitHub
from providers.provider import check_provider_class
from providers.ratelimits import QuotaLimit
from service.config import PROVIDERS, REAL_API_URLS
from state.quota import QuotaConfig
from sync.tasks import task_classes_for


def test_every_list_derives_from_the_registry():
    classes = providers.provider_classes()
    assert tuple(classes) == PROVIDERS
    assert {name: cls.API_URL for name, cls in classes.items()} == REAL_API_URLS
    assert set(QuotaConfig.from_env({}).limits) == set(classes)


def test_task_classes_are_generated_per_provider():
    profile, page = task_classes_for(GitHub)
    assert (profile.name, page.name, profile.page_task_name) == (
        "github.profile",
        "github.page",
        "github.page",
    )
    assert profile.provider_class is page.provider_class is GitHub


def _variant(**facts):
    return type("Broken", (GitHub,), facts)


@pytest.mark.parametrize(
    "facts, named",
    [
        ({"QUOTAS": ()}, "QUOTAS"),
        ({"QUOTAS": ("5000/3600/token",)}, "QUOTAS"),
        ({"QUOTAS": (QuotaLimit("token", 1, 1), QuotaLimit("token", 2, 2))}, "QUOTAS"),
        ({"API_URL": ""}, "API_URL"),
        ({"API_URL": "http://api.example.test"}, "API_URL"),
        ({"RELATIONS": ()}, "RELATIONS"),
        ({"RELATIONS": ("fans",)}, "RELATIONS"),
        ({"NAME": "Git Hub"}, "NAME"),
        ({"PAGE_SIZE": 0}, "PAGE_SIZE"),
        ({"PAGINATION": "link"}, "PAGINATION"),
        ({"ERRORS": {404: "skip"}}, "ERRORS"),
        ({"RATE_LIMIT_HEADERS": ("x-ratelimit-limit",)}, "RATE_LIMIT_HEADERS"),
    ],
)
def test_a_missing_or_malformed_fact_names_the_provider(facts, named):
    with pytest.raises(providers.ProviderDefinitionError) as caught:
        check_provider_class(_variant(**facts), where="providers.broken:Broken")
    assert str(caught.value).startswith(f"providers.broken:Broken: {named}")


def test_a_hook_left_out_is_refused():
    from providers.provider import Provider

    class Half(Provider):
        NAME, API_URL, RELATIONS = "half", "https://half.test", ("followers",)
        QUOTAS = (QuotaLimit("token", 10, 60),)

        def profile_call(self, account_id):
            raise NotImplementedError

    with pytest.raises(providers.ProviderDefinitionError, match="half:Half: parse_size"):
        check_provider_class(Half, where="providers.half:Half")


def test_quota_limits_refuse_nonsense():
    with pytest.raises(ValueError):
        QuotaLimit("planet", 10, 60)
    assert dataclasses.replace(QuotaLimit("token", 10, 60), limit=20).limit == 20
