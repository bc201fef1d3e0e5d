"""Callback signing, retry decisions and the outbox (real Redis for the outbox)."""

from __future__ import annotations

import base64
import email.utils
import json

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from service.config import DEV_CALLBACK_SECRET, ConfigError, callback_secret_bytes, load_settings
from state.outbox import DELIVERED, FAILED, PENDING, CallbackOutbox, Delivery
from sync.callbacks import retry_after_seconds, retryable
from sync.signatures import standard_webhook_headers

#: state against a real Redis: also run on a Redis Cluster (make integration-cluster)
pytestmark = pytest.mark.cluster


def test_standard_webhook_headers_verify_with_the_reference_library():
    body = json.dumps({"event": "sync.succeeded", "sync_id": "s_1"}).encode()
    headers = standard_webhook_headers(callback_secret_bytes(DEV_CALLBACK_SECRET), "s_1.x", body)
    assert headers["webhook-id"] == "s_1.x"
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(DEV_CALLBACK_SECRET).verify(body, headers)["sync_id"] == "s_1"


def test_a_changed_body_does_not_verify():
    key = callback_secret_bytes(DEV_CALLBACK_SECRET)
    headers = standard_webhook_headers(key, "id", b'{"a":1}')
    with pytest.raises(WebhookVerificationError):
        Webhook(DEV_CALLBACK_SECRET).verify(b'{"a":2}', headers)


@pytest.mark.parametrize(
    "secret", ["nope", "whsec_!!!", "whsec_" + base64.b64encode(b"short").decode()]
)
def test_a_malformed_callback_secret_is_refused(secret):
    with pytest.raises(ConfigError):
        load_settings({"CALLBACK_SECRET": secret})


def test_production_with_a_callback_url_needs_its_own_secret():
    env = {
        "NETSYNC_ENV": "production",
        "REDIS_URL": "redis://x",
        "DATABASE_URL": "postgresql://db/x",
        "WEBHOOK_SECRETS": "a",
        "INTERNAL_API_TOKENS": "b",
        "TOKEN_ENCRYPTION_KEY": "c",
        "CALLBACK_URL": "https://app/cb",
    }
    with pytest.raises(ConfigError, match="CALLBACK_SECRET"):
        load_settings(env)
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    assert load_settings({**env, "CALLBACK_SECRET": secret}).callback_secrets == (secret,)


def test_during_a_rotation_both_secrets_verify():
    new = "whsec_" + base64.b64encode(b"n" * 32).decode()
    settings = load_settings({"CALLBACK_SECRET": f"{new},{DEV_CALLBACK_SECRET}"})
    headers = standard_webhook_headers(settings.callback_keys, "id-1", b"{}")
    assert headers["webhook-signature"].count("v1,") == 2
    for secret in (new, DEV_CALLBACK_SECRET):
        assert Webhook(secret).verify(b"{}", headers) == {}


def test_retry_after_as_seconds_or_http_date():
    now = 1_000_000.0
    assert retry_after_seconds("7", now) == 7
    assert retry_after_seconds(email.utils.formatdate(now + 30, usegmt=True), now) == 30
    assert retry_after_seconds("999999", now) == 3600  # capped
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds(None, now) is None


@pytest.mark.parametrize(
    "status,expected",
    [
        (None, True),
        (429, True),
        (500, True),
        (503, True),
        (400, False),
        (404, False),
        (410, False),
        (301, False),
    ],
)
def test_what_is_retried(status, expected):
    assert retryable(status) is expected


def test_outbox_keeps_one_delivery_per_id_and_a_dead_letter_list(redis_client, key_prefix):
    outbox = CallbackOutbox(redis_client, key_prefix)
    delivery = Delivery(
        id="s_1.sync.failed",
        event="sync.failed",
        sync_id="s_1",
        provider="github",
        body="{}",
        created_at=1.0,
    )
    assert outbox.add(delivery) is True
    assert outbox.add(delivery) is False  # the same event again is the same delivery
    stored = outbox.get(delivery.id)
    outbox.record_attempt(stored, PENDING, 503, "HTTP 503", next_at=5.0)
    outbox.record_attempt(stored, FAILED, 400, "HTTP 400")
    assert [d.id for d in outbox.failed()] == [delivery.id]
    assert outbox.get(delivery.id).attempts == 2
    reopened = outbox.reopen(delivery.id)
    assert (reopened.state, reopened.attempts) == (PENDING, 0)
    assert outbox.failed() == []
    outbox.record_attempt(reopened, DELIVERED, 200, None)
    assert outbox.counts() == {PENDING: 0, DELIVERED: 1, FAILED: 0}
    assert len(outbox.get(delivery.id).history) == 3
