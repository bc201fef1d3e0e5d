"""Secrets: redaction by the values in use, oauthlib kept above DEBUG, key rotation."""

from __future__ import annotations

import logging

import pytest
from cryptography.fernet import Fernet

from service.observability import REDACTED, configure_logging, redact
from state.credentials import SECRETS_IN_USE, Credential, CredentialError, CredentialStore

#: state against a real Redis: also run on a Redis Cluster (make integration-cluster)
pytestmark = pytest.mark.cluster


def test_a_credential_read_or_stored_is_redacted_in_any_shape(redis_client, key_prefix):
    store = CredentialStore(redis_client, key_prefix, (Fernet.generate_key().decode(),))
    store.save("twitter", "u-1", Credential("12345", "at-9f8e7d6c5b", token_secret="ts-0a1b2c3d4e"))
    # oauthlib's shapes: the signing key, its collected parameters
    for text in (
        "Signing key: client-secret-x&ts-0a1b2c3d4e",
        "Collected params: [('oauth_consumer_key', 'k'), ('oauth_token', 'at-9f8e7d6c5b')]",
        "at-9f8e7d6c5b",
    ):
        cleaned = redact(text)
        assert "at-9f8e7d6c5b" not in cleaned and "ts-0a1b2c3d4e" not in cleaned
        assert REDACTED in cleaned


def test_short_values_are_not_secrets():
    SECRETS_IN_USE.add("abc")
    assert redact("abc def") == "abc def"


@pytest.mark.parametrize("level", ["DEBUG", "INFO", "WARNING"])
def test_oauthlib_loggers_stay_above_debug(level):
    configure_logging(level)
    for name in ("oauthlib", "requests_oauthlib", "oauthlib.oauth1.rfc5849"):
        assert not logging.getLogger(name).isEnabledFor(logging.DEBUG)


def test_rotation_re_encrypts_every_credential_with_the_first_key(redis_client, key_prefix):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    before = CredentialStore(redis_client, key_prefix, (old,))
    for user in ("u-1", "u-2", "u-3"):
        before.save("github", user, Credential("octo", f"tok-{user}-secret"))
    rotating = CredentialStore(redis_client, key_prefix, (new, old))
    assert rotating.rotate_all() == (3, 0)
    after = CredentialStore(redis_client, key_prefix, (new,))  # the old key dropped
    assert after.load("github", "u-2").access_token == "tok-u-2-secret"
    with pytest.raises(CredentialError):
        before.load("github", "u-1")  # no longer readable with the old key alone


def test_rotation_counts_what_no_key_can_read(redis_client, key_prefix):
    CredentialStore(redis_client, key_prefix, (Fernet.generate_key().decode(),)).save(
        "github", "u-1", Credential("octo", "tok-lost-forever")
    )
    store = CredentialStore(redis_client, key_prefix, (Fernet.generate_key().decode(),))
    assert store.rotate_all() == (0, 1)
