"""The simulated providers: one class each, registered by one line, checked at load.

Every per-provider table the simulator's shared modules keep (relations, default
rate limits, page faults, id spaces, token lifetimes) is derived from the classes;
these tests hold the registry to that and to netsync's own registry.
"""

from __future__ import annotations

import pytest

import providers
from simulator import faults, scenario
from simulator.errors import ProviderDefinitionError
from simulator.identities import PermutedIds
from simulator.providers import (
    PROVIDER_SIMS,
    REGISTRY,
    check_class,
    load_registry,
    sample_account_id,
)
from simulator.providers.base import ErrorRow, ProviderSim, Route


class Example(ProviderSim):
    """A seventh provider as small as one can be: what the registry asks of a class."""

    NAME = "example"
    RELATIONS = ("followers",)
    NATIVE_IDS = PermutedIds(40, 1)
    ID_FORM = r"[1-9]\d*"
    PAGE_SIZE = MAX_PAGE_SIZE = 10
    SAMPLE_PATHS = {"profile": "/users/{account}", "page": "/users/{account}/followers"}
    ROUTES = (Route("GET", "/users/{id}", "profile", "profile", account_param="id"),)
    ERROR_ROWS = (
        ErrorRow("unauthorized", 401, "Unauthorized"),
        ErrorRow("not_found", 404, "Not Found"),
        ErrorRow("unavailable", 503, "Unavailable"),
    )
    ROW_MISSING_AUTH = ROW_MALFORMED_AUTH = ROW_UNKNOWN_TOKEN = "unauthorized"
    ROW_EXPIRED_TOKEN = ROW_REVOKED_TOKEN = "unauthorized"
    ROW_NOT_FOUND = "not_found"
    ROW_OUTAGE = "unavailable"

    def profile(self, sim, call, mods):
        return self.respond({"id": call.account.id})


def test_netsync_and_the_simulator_register_the_same_providers_in_the_same_order():
    assert tuple(PROVIDER_SIMS) == providers.names()


@pytest.mark.parametrize("name", list(PROVIDER_SIMS))
def test_the_simulator_serves_every_relation_netsync_syncs(name):
    assert PROVIDER_SIMS[name].RELATIONS == providers.provider_class(name).RELATIONS


def test_the_shared_tables_are_the_classes_facts():
    for name, sim in PROVIDER_SIMS.items():
        assert scenario.RELATIONS[name] == sim.RELATIONS
        assert scenario.DEFAULT_RATE_LIMITS.get(name, []) == list(sim.RATE_LIMITS)
        assert (name in scenario.ALIGNED_WINDOWS) is sim.ALIGNED_WINDOWS
        assert (name in scenario.PER_ENDPOINT_WINDOWS) is sim.PER_ENDPOINT_WINDOWS
        assert (name in scenario.ROLLING_WINDOWS) is sim.ROLLING_WINDOWS
        assert (name in scenario.FEDERATED) is sim.FEDERATED
        assert (name in scenario.INCLUDABLE) is sim.INCLUDABLE
        for kind in sim.PAGE_FAULTS:
            assert name in faults.KINDS[kind]
    assert tuple(PROVIDER_SIMS) == scenario.PROVIDERS


def test_a_seventh_provider_is_its_class_and_one_registry_line():
    sims = load_registry((*REGISTRY, f"{__name__}:Example"))
    assert list(sims)[-1] == "example" and isinstance(sims["example"], Example)


@pytest.mark.parametrize(
    "fact, value",
    [
        ("NAME", "Not-A-Name"),
        ("RELATIONS", ()),
        ("NATIVE_IDS", None),
        ("ID_FORM", ""),
        ("ID_FORM", "(unclosed"),
        ("PAGE_SIZE", 11),  # above MAX_PAGE_SIZE
        ("PAGE_FAULTS", frozenset({"short_pages"})),
        ("RATE_LIMITS", ({"limit": 5},)),  # no window
        ("RATE_LIMITS", {"limit": 5, "window_s": 60}),  # one rule, not a tuple of them
        ("PRICE_USD", -0.01),
        ("SAMPLE_PATHS", {"profile": "/users/{account}"}),
        ("ROUTES", ()),
        ("ROUTES", (Route("GET", "/x", "no_handler", "page"),)),
        ("ROW_NOT_FOUND", "no_such_row"),
        ("ROW_UNKNOWN_PATH", "no_such_row"),
    ],
)
def test_a_bad_fact_fails_at_load_naming_the_class_and_the_fact(fact, value):
    broken = type("Broken", (Example,), {fact: value})
    with pytest.raises(ProviderDefinitionError, match=f"Broken.*{fact}"):
        check_class(broken, "tests:Broken")


def test_the_registry_refuses_a_missing_class_and_a_name_twice():
    with pytest.raises(ProviderDefinitionError, match="no class Nope"):
        load_registry((f"{__name__}:Nope",))
    with pytest.raises(ProviderDefinitionError, match="registered twice"):
        load_registry((f"{__name__}:Example", f"{__name__}:Example"))


@pytest.mark.parametrize("name", list(PROVIDER_SIMS))
def test_a_sample_account_id_is_one_netsync_takes(name):
    account_id = sample_account_id(name, "acct-1a2b3c")
    assert providers.provider_class(name).valid_account_id(account_id)
    assert sample_account_id("no-such-provider", "acct-1") == "acct-1"
