"""Log lines (JSON and key=value) carry the sync's context and no secret; Sentry events are scrubbed."""

from __future__ import annotations

import io
import json
import logging

import pytest

from service.observability import REDACTED, before_send, line_formatter, scrub
from sync import telemetry
from sync.telemetry import SyncLogContext


def log_line(log_format: str, message: str, *args, **extra) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(line_formatter(log_format))
    handler.addFilter(SyncLogContext())
    logger = logging.getLogger(f"netsync.test.{log_format}")
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.INFO)
    logger.info(message, *args, extra=extra)
    return stream.getvalue().strip()


@pytest.fixture
def bound_sync():
    telemetry.bind_sync("s_abc", "github", "followers", "normal")
    yield
    telemetry.clear()


def test_json_lines_carry_the_sync_context(bound_sync):
    line = json.loads(log_line("json", "page stored %d", 3, api_key="k-123"))
    assert line["message"] == "page stored 3"
    assert (line["sync_id"], line["provider"], line["relation"], line["queue"]) == (
        "s_abc",
        "github",
        "followers",
        "normal",
    )
    assert line["level"] == "INFO" and line["logger"] == "netsync.test.json" and line["ts"]
    assert line["api_key"] == REDACTED


def test_text_lines_carry_the_sync_context(bound_sync):
    line = log_line("text", "page stored")
    assert "sync_id=s_abc" in line and "provider=github" in line and "queue=normal" in line


def test_a_line_outside_a_sync_has_no_sync_fields():
    assert "sync_id" not in json.loads(log_line("json", "scheduler round"))


def test_tokens_never_reach_a_line(bound_sync):
    from service.observability import install_redaction

    install_redaction()
    line = log_line(
        "json", "GET https://api/x?access_token=tok-SECRET&a=1", note="Bearer tok-SECRET"
    )
    assert "tok-SECRET" not in line


def test_the_sentry_scrubber_is_recursive_and_drops_request_bodies():
    event = {
        "request": {
            "data": {"accounts": [{"access_token": "a1"}]},
            "cookies": {"s": "c1"},
            "headers": {"X-Netsync-Signature": "t=1,v1=ff", "Accept": "x"},
        },
        "extra": {
            "deep": [
                {"refresh_token": "r1", "nested": {"token_secret": "t1", "client_secret": "c2"}}
            ],
            "code": "oauth-code-1",
            "url": "https://x/cb?code=ok&access_token=a2",
        },
        "tags": {"provider": "github", "sync_id": "s_1"},
    }
    text = json.dumps(scrub(event))
    for secret in ("a1", "c1", "t=1,v1=ff", "r1", "t1", "c2", "oauth-code-1", "a2"):
        assert f'"{secret}"' not in text and f"={secret}" not in text, secret
    assert '"provider": "github"' in text and '"sync_id": "s_1"' in text


def test_expected_provider_errors_are_not_sent():
    class Expected(Exception):
        expected = True

    assert before_send({"x": 1}, {"exc_info": (Expected, Expected(), None)}) is None
    assert before_send({"x": 1}, {"exc_info": (ValueError, ValueError(), None)}) == {"x": 1}
