"""Property-based tests (Hypothesis): the signature parser, the login payload's
validation and the pagination planner, over inputs nobody would write by hand."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from providers import pagination, provider_classes
from providers.pagination import cursor_offset
from service.http_errors import ApiError, read_json_object
from service.webhooks import parse_login
from state.store import USER_ID_RE
from sync.signatures import SignatureError, parse_header, sign, verify

NOW = 1_800_000_000


# -- signatures ------------------------------------------------------------------------
@given(
    body=st.binary(max_size=512),
    secret=st.text(min_size=1, max_size=40),
    skew=st.integers(-300, 300),
)
def test_a_signature_verifies_its_own_body_only(body, secret, skew):
    header = sign(secret, body, NOW + skew)
    assert verify(header, body, [secret], now=NOW) == NOW + skew
    with pytest.raises(SignatureError):
        verify(header, body + b"x", [secret], now=NOW)
    with pytest.raises(SignatureError):
        verify(header, body, [secret + "x"], now=NOW)


@given(
    header=st.one_of(
        st.none(),
        st.text(max_size=300),
        st.lists(
            st.sampled_from(["t=", "v1=", "t=1", ",", "=", " ", "v1=ab", "t=99999999999", "x=y"]),
            max_size=12,
        ).map("".join),
    )
)
def test_the_parser_refuses_junk_with_a_signature_error_only(header):
    try:
        timestamp, candidates = parse_header(header)
    except SignatureError:
        return
    assert isinstance(timestamp, int) and 1 <= len(candidates) <= 8


@given(skew=st.one_of(st.integers(301, 10**9), st.integers(-(10**9), -301)))
def test_outside_the_tolerance_nothing_verifies(skew):
    body = b"{}"
    with pytest.raises(SignatureError) as refused:
        verify(sign("s", body, NOW + skew), body, ["s"], now=NOW)
    assert refused.value.reason in ("stale", "future")


# -- the login payload -------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
accounts = st.fixed_dictionaries(
    {"provider": st.sampled_from(sorted(provider_classes()) + ["myspace", ""])},
    optional={
        "account_id": st.text(max_size=70),
        "access_token": st.text(max_size=30),
        "refresh_token": json_values,
        "expires_at": json_values,
        "token_secret": json_values,
    },
)
documents = st.one_of(
    st.dictionaries(st.text(max_size=12), json_values, max_size=5),
    st.fixed_dictionaries(
        {
            "user_id": st.text(max_size=130) | json_values,
            "accounts": st.lists(accounts, max_size=3) | json_values,
        }
    ),
)


@settings(max_examples=300)
@given(document=documents)
def test_payload_validation_accepts_only_what_it_can_store(document):
    try:
        user_id, parsed = parse_login(document)
    except ApiError as exc:
        assert exc.status == 422
        return
    assert USER_ID_RE.match(user_id)
    for provider, credential in parsed:
        assert provider_classes()[provider].valid_account_id(credential.account_id)
        assert credential.access_token.isascii() and credential.access_token.isprintable()


@given(raw=st.binary(max_size=200) | documents.map(lambda d: json.dumps(d).encode()))
def test_body_reading_is_a_document_or_a_clear_error(raw):
    try:
        document = read_json_object(raw, True)
    except ApiError as exc:
        assert exc.status in (400, 422)
        return
    assert isinstance(document, dict)


# -- the pagination planner ----------------------------------------------------------------
OFFSET_PROVIDERS = [
    cls for cls in provider_classes().values() if cls.PAGINATION.name == "OFFSET_KNOWN"
]


@pytest.mark.parametrize("cls", OFFSET_PROVIDERS, ids=lambda c: c.NAME)
@given(size=st.integers(0, 2_000_000))
def test_planned_pages_cover_a_known_size_once_each(cls, size):
    provider = cls("https://api.example.test")
    offsets = [cursor_offset(c) for c in pagination.initial_cursors(provider, "acct", size)]
    page = cls.PAGE_SIZE
    assert offsets == [i * page for i in range(len(offsets))]  # no gap, no repeat
    assert offsets[-1] < max(size, 1) and offsets[-1] + page >= size  # ends at the size


@pytest.mark.parametrize("cls", list(provider_classes().values()), ids=lambda c: c.NAME)
@given(size=st.one_of(st.none(), st.integers(0, 10**7)))
def test_every_provider_plans_at_least_one_distinct_page(cls, size):
    cursors = pagination.initial_cursors(cls("https://api.example.test"), "acct", size)
    assert cursors and len(cursors) == len(set(cursors))
