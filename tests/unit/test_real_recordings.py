"""The real recorded provider responses are in the repo, listed, and each one checked.

Each recording runs in its provider's contract test (``test_<name>_provider.py``,
``ProviderContract.test_real_recording``, through ``recordings.check``); here:
the files are there, their READMEs list exactly them, and every provider with
recordings has a contract test that runs them.
"""

from __future__ import annotations

import importlib

import pytest

import providers
from tests.unit import recordings
from tests.unit.provider_contract import contract_classes


def test_every_recording_is_in_the_repo_and_covered():
    """The recordings are in the repo (a missing directory fails, never skips), each
    README lists exactly its directory's files, and no real/ file is silently left out."""
    for base in (recordings.REAL, recordings.REAL_MORE):
        files = set(recordings.recordings(base))
        assert files, f"no recordings in {base}"
        assert files == recordings.readme_files(base), base
    assert len(recordings.recordings(recordings.REAL_MORE)) == 36
    real = set(recordings.recordings(recordings.REAL))
    assert real == set(recordings.REAL_EXPECT) | recordings.REAL_NOT_CHECKED
    assert not set(recordings.REAL_EXPECT) & recordings.REAL_NOT_CHECKED


@pytest.mark.parametrize("name", providers.names())
def test_every_provider_has_a_contract_test_that_runs_its_recordings(name):
    module = importlib.import_module(f"tests.unit.test_{name}_provider")
    (contract,) = contract_classes(module)
    assert contract.PROVIDER is providers.provider_class(name)
    ran = {n for _, n in contract().recordings()}
    for base in (recordings.REAL, recordings.REAL_MORE):
        mine = {n for n in recordings.recordings(base) if n.startswith(f"{name}/")}
        assert mine - recordings.REAL_NOT_CHECKED <= ran


def test_every_recording_belongs_to_a_registered_provider():
    for base in (recordings.REAL, recordings.REAL_MORE):
        assert {n.split("/")[0] for n in recordings.recordings(base)} <= set(providers.names())
