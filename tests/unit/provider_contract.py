"""The contract every provider's tests hold it to (social-core's ``OAuth2Test`` pattern).

A provider's test module is a subclass of ``ProviderContract`` naming its
class and its canned answers; the shared tests below run on them:

- the class: it passes the registry's check and is registered under its name;
- the profile: a canned profile answer classifies as good and gives its size;
- pages: each canned page parses to its connections (ids as strings) and to
  the pages it launches next; every relation's first page call, and the
  profile call, stay under the base URL, its path included (a proxy, the
  simulator's ``/<name>`` prefix);
- errors: each row of the provider's error table (PROVIDERS.md) classifies
  to its action, kind and ``tell_user``, with the wait the provider stated;
  a server error without a body the provider knows backs off; every rule of
  the table is an action of the taxonomy;
- rate headers: what ``rate_info`` reads from a canned answer;
- recordings: every real recorded answer of the provider (``tests/fixtures/
  real/<name>/`` with ``recordings.REAL_EXPECT``, ``real-more/<name>/`` with
  its own ``expect``), through ``recordings.check`` and the class's hooks.

A canned answer is ``(status, body, headers)`` or the name of a file in the
class's ``FIXTURES`` folder holding ``{"response": {"status", "body", "headers"}}``.
Tests of a provider's own quirks stay beside its subclass, in the same module.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

import pytest
from requests.structures import CaseInsensitiveDict

import providers
from providers.errors import Action
from providers.provider import check_provider_class
from tests.unit import recordings

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z
#: not stated: the case does not check this
UNSET = object()


@dataclass(frozen=True)
class ProfileCase:
    #: the canned profile answer and the size it states (of the first relation)
    answer: object
    size: int | None


@dataclass(frozen=True)
class PageCase:
    id: str
    answer: object
    #: the cursor netsync held when it asked for this page
    cursor: str
    #: the (id, handle) pairs it holds; or only how many, and the first
    connections: list | None = None
    count: int | None = None
    first: tuple | None = None
    #: the cursors it launches next (``Page.followups``), and the chained one
    followups: list | None = None
    next_cursor: object = UNSET
    #: the total the page states
    total: object = UNSET


@dataclass(frozen=True)
class ErrorCase:
    id: str
    answer: object
    action: Action
    kind: str
    tell_user: bool = False
    #: when the provider said we may call again (epoch s; None: it did not say)
    retry_at: object = UNSET
    #: the message netsync keeps of it
    message: object = UNSET


@dataclass(frozen=True)
class RateCase:
    #: a canned answer and what its rate-limit headers say
    answer: object
    limit: int | None
    remaining: int | None
    reset_at: float | None


def canned(folder: str, name: str) -> tuple:
    """A canned answer from ``tests/fixtures/<folder>/<name>`` as netsync's HTTP layer
    hands it on: status, body, case-insensitive headers (as requests gives them)."""
    response = json.loads((recordings.FIXTURES / folder / name).read_text())["response"]
    return response["status"], response["body"], CaseInsensitiveDict(response.get("headers") or {})


class ProviderContract:
    """Subclass as ``Test<Provider>``, set the class and the canned answers."""

    #: the ``providers.provider.Provider`` subclass under test
    PROVIDER: type = None
    #: the base URL the provider object is made with (default: the real one, ``API_URL``)
    BASE_URL: str | None = None
    #: the folder under ``tests/fixtures`` its canned answers (file names) are in
    FIXTURES: str = ""
    PROFILE: ProfileCase | None = None
    PAGES: tuple = ()
    #: its error table, row by row (PROVIDERS.md)
    ERRORS: tuple = ()
    RATE: RateCase | None = None

    # -- what the shared tests run on --------------------------------------------
    @pytest.fixture
    def provider(self):
        return self.PROVIDER(self.BASE_URL or self.PROVIDER.API_URL)

    def answer(self, answer) -> tuple:
        if isinstance(answer, str):
            return canned(self.FIXTURES, answer)
        status, body, headers = answer
        return status, body, CaseInsensitiveDict(headers)

    def pytest_generate_tests(self, metafunc):
        """One test per page, error row and recording of this provider."""
        cases = {
            "page_case": (self.PAGES, lambda c: c.id),
            "error_case": (self.ERRORS, lambda c: c.id),
            "recording": (self.recordings(), lambda r: f"{r[0].name}/{r[1]}"),
            "relation": (self.PROVIDER.RELATIONS, str),
        }
        for name, (values, ids) in cases.items():
            if name not in metafunc.fixturenames:
                continue
            if not values:  # say why rather than pytest's "empty parameter set"
                reason = f"{self.PROVIDER.NAME}: no {name.replace('_', ' ')}s to run"
                values, ids = [pytest.param(None, marks=pytest.mark.skip(reason=reason))], None
                metafunc.parametrize(name, values)
                continue
            metafunc.parametrize(name, list(values), ids=[ids(v) for v in values])

    # -- the class ---------------------------------------------------------------
    def test_the_contract_has_its_canned_answers(self):
        assert self.PROFILE and self.RATE and self.PAGES and self.ERRORS, (
            f"{type(self).__name__}: PROFILE, RATE, PAGES and ERRORS are the provider's contract"
        )

    def test_the_class_passes_the_registry_check_and_is_registered(self):
        check_provider_class(self.PROVIDER, self.PROVIDER.__name__)
        assert providers.provider_class(self.PROVIDER.NAME) is self.PROVIDER

    # -- profile and pages -------------------------------------------------------
    def test_profile_is_good_and_gives_the_size(self, provider):
        status, body, headers = self.answer(self.PROFILE.answer)
        assert provider.classify(status, body, headers, NOW) is None
        assert provider.parse_size(body) == self.PROFILE.size

    def test_page_parses_to_its_connections_and_next_pages(self, provider, page_case):
        status, body, headers = self.answer(page_case.answer)
        assert provider.classify(status, body, headers, NOW) is None
        page = provider.parse_page(body, headers, page_case.cursor)
        assert all(isinstance(i, str) for i, _ in page.connections)  # ids stored as strings
        if page_case.connections is not None:
            assert page.connections == page_case.connections
        if page_case.count is not None:
            assert len(page.connections) == page_case.count
        if page_case.first is not None:
            assert page.connections[0] == page_case.first
        if page_case.followups is not None:
            assert page.followups == page_case.followups
        if page_case.next_cursor is not UNSET:
            assert page.next_cursor == page_case.next_cursor
        if page_case.total is not UNSET:
            assert page.total == page_case.total

    def test_calls_stay_under_the_base_url_and_its_path(self, relation):
        base = f"http://127.0.0.1:8900/{self.PROVIDER.NAME}"
        provider = self.PROVIDER(base)
        assert provider.profile_call("acct-1").url.startswith(base + "/")
        cursor = provider.first_cursor("acct-1", relation)
        assert provider.page_call("acct-1", cursor).url.startswith(base + "/")

    # -- errors --------------------------------------------------------------------
    def test_error_row_has_its_action(self, provider, error_case):
        status, body, headers = self.answer(error_case.answer)
        error = provider.classify(status, body, headers, NOW)
        assert error is not None
        assert (error.action, error.rule.kind, error.rule.tell_user) == (
            error_case.action,
            error_case.kind,
            error_case.tell_user,
        )
        if error_case.retry_at is not UNSET:
            assert error.retry_at == error_case.retry_at  # the provider's word, not a guess
        if error_case.message is not UNSET:
            assert error.message == error_case.message

    @pytest.mark.parametrize("status", [500, 502, 503, 504])
    def test_server_errors_without_a_known_body_back_off(self, provider, status):
        assert provider.classify(status, None, CaseInsensitiveDict(), NOW).action is Action.BACKOFF

    def test_every_table_rule_is_a_taxonomy_action(self):
        for table in (self.PROVIDER.ERRORS, self.PROVIDER.REFRESH_ERRORS):
            for rule in table.values():
                assert isinstance(rule.action, Action) and rule.kind

    # -- rate headers --------------------------------------------------------------
    def test_rate_headers(self, provider):
        _, _, headers = self.answer(self.RATE.answer)
        info = provider.rate_info(headers)
        assert (info.limit, info.remaining, info.reset_at) == (
            self.RATE.limit,
            self.RATE.remaining,
            self.RATE.reset_at,
        )

    # -- real recordings -------------------------------------------------------------
    def recordings(self) -> list[tuple]:
        """(folder, "<name>/<file>") of every checked recording of this provider."""
        prefix = f"{self.PROVIDER.NAME}/"
        real = [
            (recordings.REAL, n) for n in sorted(recordings.REAL_EXPECT) if n.startswith(prefix)
        ]
        more = recordings.recordings(recordings.REAL_MORE)
        return real + [(recordings.REAL_MORE, n) for n in more if n.startswith(prefix)]

    def test_real_recording(self, recording):
        base, name = recording
        problems = recordings.check(self, base, name)
        assert not problems, f"{base.name}/{name}:\n  " + "\n  ".join(problems)

    # hooks: what is provider-specific about a recorded request and its body
    def recording_provider(self, request_url: str):
        """The provider object that reads a recording (netsync's default base URL)."""
        return self.PROVIDER(self.PROVIDER.API_URL)

    def recorded_account(self, request_url: str) -> str:
        """The account the recorded request was about (where the page call needs it)."""
        return "recorded"

    def recorded_cursor(self, provider, account_id: str, request_url: str) -> str:
        """The cursor netsync holds when it sends exactly the recorded request."""
        return provider.first_cursor(account_id)

    def documented_ids(self, body) -> list[str]:
        """The ids a page holds by the documented rule (PROVIDERS.md: ids as strings)."""
        raise NotImplementedError(f"{type(self).__name__}: documented_ids")

    # helpers for the hooks
    @staticmethod
    def link_cursor(provider, request_url: str) -> str:
        """Link-paged providers: the cursor is the URL's path and query, on our origin."""
        cursor = provider.relative(request_url)
        assert cursor is not None, f"{request_url} is not on {provider.origin}"
        return cursor

    @staticmethod
    def query(request_url: str) -> dict:
        return dict(parse_qsl(urlsplit(request_url).query))

    @staticmethod
    def path_segments(request_url: str) -> list[str]:
        return urlsplit(request_url).path.strip("/").split("/")


def contract_classes(module) -> list[type]:
    """The ``ProviderContract`` subclasses a test module defines."""
    return [
        value
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, ProviderContract)
        if value is not ProviderContract and re.match("Test", value.__name__)
    ]
