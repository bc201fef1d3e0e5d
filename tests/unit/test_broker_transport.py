"""sync.broker: a worker survives kombu's failed give-back of unacked messages.

The state is the one of the worker log that showed the fault (a Redis restart
mid-sync, threads pool): the channel closes after its connection's details
are gone, while it holds a message received and not acked. kombu's own
transport raises AttributeError there, which Celery treats as unrecoverable
(the worker exits); ours logs it, and the message waits in the broker's
unacked set, from which it comes back (visibility timeout, stall sweep).
"""

from __future__ import annotations

import logging
import secrets

import pytest
import redis
from kombu import Connection

from sync.broker import TRANSPORT


@pytest.fixture
def prefix(redis_url):
    """The tests' kombu keys live under a prefix of their own, removed afterwards."""
    prefix = f"t-{secrets.token_hex(4)}:"
    yield prefix
    raw = redis.Redis.from_url(redis_url)
    for key in raw.scan_iter(match=prefix + "*"):
        raw.delete(key)


def closed_holding_an_unacked_message(redis_url: str, prefix: str, transport: str | None):
    conn = Connection(
        redis_url, transport=transport, transport_options={"global_keyprefix": prefix}
    )
    channel = conn.default_channel
    queue = conn.SimpleQueue("pages", channel=channel)
    queue.put({"page": 1})
    message = queue.get(timeout=5)  # received, not acked
    assert len(channel.qos._delivered) == 1
    unacked_key = channel.unacked_key  # the client adds the prefix
    client = channel.client
    channel.connection.client = None  # what the broken connection's close leaves
    channel.held_tag = message.delivery_tag
    return channel, client, unacked_key


def test_kombus_own_transport_raises_where_the_worker_would_exit(redis_url, prefix):
    channel, client, _ = closed_holding_an_unacked_message(redis_url, prefix, None)
    with pytest.raises(AttributeError):
        channel.close()


def test_ours_logs_and_leaves_the_message_in_the_unacked_set(redis_url, prefix, caplog):
    channel, client, unacked_key = closed_holding_an_unacked_message(redis_url, prefix, TRANSPORT)
    with caplog.at_level(logging.WARNING, logger="netsync.broker"):
        channel.close()  # no exception: the worker goes on reconnecting
    assert "could not give back 1 message(s)" in caplog.text
    assert client.hlen(unacked_key) == 1  # still in the broker, to be restored


@pytest.mark.parametrize("transport, survives", [(None, False), (TRANSPORT, True)])
def test_a_task_finishing_after_the_close_can_reject_or_ack(redis_url, prefix, transport, survives):
    """A page task still running at the break ends later (Reject with requeue, or a
    success): its ack or reject reaches the closed channel."""
    channel, client, unacked_key = closed_holding_an_unacked_message(redis_url, prefix, transport)
    channel.qos.restore_unacked = lambda client=None: None  # the close itself is not the case here
    channel.close()
    for settle in (
        lambda: channel.qos.reject(channel.held_tag, requeue=True),
        lambda: channel.qos.ack(channel.held_tag),
    ):
        if survives:
            settle()
        else:
            with pytest.raises(AttributeError):
                settle()
    assert client.hlen(unacked_key) == 1
