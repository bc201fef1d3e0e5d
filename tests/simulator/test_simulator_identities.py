"""Deterministic connection ids: unique, stable, provider-shaped, O(1) per account."""

import re

import pytest

from simulator.identities import ConnectionSpace, permute
from simulator.providers import PROVIDER_SIMS
from simulator.scenario import Account


@pytest.mark.parametrize("provider", list(PROVIDER_SIMS))
def test_ids_are_unique_stable_and_provider_shaped(provider):
    space = Account(provider, "someone", size=20_000).space()
    again = Account(provider, "someone", size=20_000).space()
    sim = PROVIDER_SIMS[provider]
    ids = [i for i, _ in sim.connections(space, space.start, space.end)]
    assert len(set(ids)) == len(ids)
    assert ids[:50] == [sim.stored_form(again.native(i))[0] for i in range(50)]
    assert all(re.fullmatch(sim.ID_FORM, i) for i in ids)  # the form its class states
    other = Account(provider, "someone-else", size=50).space()
    assert set(ids[:50]).isdisjoint(i for i, _ in sim.connections(other, 0, 50))


def test_twitter_mixes_small_ids_and_ids_beyond_2_53():
    space = Account("twitter", "42", size=400).space()
    values = [space.native(i) for i in range(400)]
    assert any(v < 2**33 for v in values) and any(v > 2**53 for v in values)


def test_permute_is_a_bijection_on_small_domains():
    for bits in (1, 2, 5, 8, 12):
        assert sorted(permute(i, bits, 0xABCDEF) for i in range(2**bits)) == list(range(2**bits))


def test_a_billion_followers_cost_nothing_until_paged():
    space = Account("github", "whale", size=1_000_000_000).space()
    last = space.native(space.end - 1)
    assert isinstance(space, ConnectionSpace) and last > 0
    assert not hasattr(space, "__dict__")  # slots only: no per-connection storage
    assert space.overrides == {}  # and nothing stored per connection: an id is computed


def test_start_shifts_the_window_not_the_ids():
    moved = Account("mastodon", "1", start=10, size=5).space()
    base = Account("mastodon", "1", size=15).space()
    assert [moved.native(i) for i in range(moved.start, moved.end)] == [
        base.native(i) for i in range(10, 15)
    ]
