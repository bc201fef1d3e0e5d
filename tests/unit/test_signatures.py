"""The signature scheme shared by the login webhook and the outbound callbacks."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from sync import signatures
from sync.signatures import SignatureError, compute, sign, verify

BODY = b'{"user_id":"u-1","accounts":[]}'
NOW = 1_767_225_600
OLD, NEW = "old-secret", "new-secret"


def reason(header, body=BODY, secrets=(OLD,), now=NOW, **kwargs) -> str:
    with pytest.raises(SignatureError) as caught:
        verify(header, body, secrets, now=now, **kwargs)
    return caught.value.reason


def test_sign_follows_the_contract_format():
    expected = hmac.new(OLD.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(OLD, BODY, NOW) == f"t={NOW},v1={expected}"


def test_a_valid_signature_verifies_and_returns_its_timestamp():
    assert verify(sign(OLD, BODY, NOW), BODY, [OLD], now=NOW) == NOW


def test_sign_defaults_to_the_current_time():
    header = sign(OLD, BODY)
    assert verify(header, BODY, [OLD]) > 0


def test_a_tampered_body_is_refused():
    header = sign(OLD, BODY, NOW)
    assert reason(header, body=BODY + b" ") == "mismatch"
    assert reason(header, body=BODY.replace(b"u-1", b"u-2")) == "mismatch"


def test_a_wrong_secret_is_refused():
    assert reason(sign("someone-else", BODY, NOW)) == "mismatch"


def test_the_timestamp_is_part_of_what_is_signed():
    v1 = compute(OLD, BODY, NOW)
    assert reason(f"t={NOW + 1},v1={v1}") == "mismatch"


@pytest.mark.parametrize("age", [301, 3600, NOW])
def test_a_stale_signature_is_refused(age):
    assert reason(sign(OLD, BODY, NOW - age)) == "stale"


@pytest.mark.parametrize("ahead", [301, 86400])
def test_a_signature_from_the_future_is_refused(ahead):
    assert reason(sign(OLD, BODY, NOW + ahead)) == "future"


@pytest.mark.parametrize("skew", [-300, -1, 0, 1, 300])
def test_the_tolerance_is_inclusive_both_ways(skew):
    assert verify(sign(OLD, BODY, NOW + skew), BODY, [OLD], now=NOW) == NOW + skew


def test_the_tolerance_is_a_parameter():
    header = sign(OLD, BODY, NOW - 20)
    assert reason(header, tolerance=10) == "stale"
    assert verify(header, BODY, [OLD], now=NOW, tolerance=30) == NOW - 20


def test_during_a_rotation_the_old_secret_still_verifies_and_the_new_one_signs():
    rotated = [NEW, OLD]  # first signs, all verify
    assert verify(sign(OLD, BODY, NOW), BODY, rotated, now=NOW) == NOW
    assert verify(sign(rotated[0], BODY, NOW), BODY, rotated, now=NOW) == NOW
    assert reason(sign(NEW, BODY, NOW), secrets=[OLD]) == "mismatch"


def test_several_v1_values_verify_if_any_matches():
    header = f"t={NOW},v1={compute('unknown', BODY, NOW)},v1={compute(OLD, BODY, NOW)}"
    assert verify(header, BODY, [OLD], now=NOW) == NOW
    assert reason(f"t={NOW},v1={'0' * 64},v1={'f' * 64}") == "mismatch"


def test_unknown_schemes_and_whitespace_are_tolerated():
    header = f" t={NOW} , v0=whatever, v1={compute(OLD, BODY, NOW).upper()} "
    assert verify(header, BODY, [OLD], now=NOW) == NOW


def test_secrets_may_be_bytes():
    assert verify(sign(OLD.encode(), BODY, NOW), BODY, [OLD.encode()], now=NOW) == NOW


@pytest.mark.parametrize(
    "header, expected",
    [
        (None, "missing"),
        ("", "missing"),
        ("   ", "missing"),
        (f"v1={'a' * 64}", "malformed"),  # no t
        (f"t=abc,v1={'a' * 64}", "malformed"),  # t not an integer
        (f"t=1.5,v1={'a' * 64}", "malformed"),
        (f"t=-5,v1={'a' * 64}", "malformed"),
        (f"t=١٢٣,v1={'a' * 64}", "malformed"),  # non-ASCII digits
        (f"t={NOW},t={NOW},v1={'a' * 64}", "malformed"),  # two timestamps
        (f"t={NOW}", "malformed"),  # no v1
        (f"t={NOW},v0={'a' * 64}", "malformed"),
        ("garbage", "malformed"),
        ("t", "malformed"),
        (",,,", "malformed"),
        ("x" * 5000, "malformed"),  # too long
        (f"t={NOW}," + ",".join(["v1=ab"] * 9), "malformed"),  # too many candidates
    ],
)
def test_malformed_headers_are_refused(header, expected):
    assert reason(header) == expected


def test_non_ascii_candidates_are_compared_not_crashed_on():
    assert reason(f"t={NOW},v1=é{'a' * 63}") == "mismatch"


def test_errors_never_carry_the_secret():
    for header in (sign(OLD, BODY, NOW - 999), sign("x", BODY, NOW), "garbage", None):
        with pytest.raises(SignatureError) as caught:
            verify(header, BODY, [OLD], now=NOW)
        assert OLD not in str(caught.value)


def test_every_candidate_is_compared_in_constant_time(monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(signatures.hmac, "compare_digest", spy)
    header = f"t={NOW},v1={compute(OLD, BODY, NOW)},v1={'0' * 64}"
    assert verify(header, BODY, [NEW, OLD], now=NOW) == NOW
    # no early exit: every (secret, candidate) pair went through compare_digest
    assert len(calls) == 4
