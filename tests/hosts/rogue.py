"""A consumer that takes one message and never runs it: what a partition does to one.

``python -m tests.hosts.rogue BROKER_URL QUEUE [QUEUE …]`` takes the next
message of the queues and prints ``took <task> <sync id> <cursor>``, then
holds on until killed. Run on a worker host whose link is then cut, it is the
message that host's worker had just been handed when the link went: on Redis
BRPOP popped it (it is neither queued nor unacked any more); on RabbitMQ it
is unacked on a connection that is now dead (RabbitMQ gives it back only when
its heartbeat timeout closes that connection).
"""

from __future__ import annotations

import json
import sys
import time

from sync.broker_ledger import read_message


def take_redis(url: str, queues: list[str]):
    import redis

    client = redis.Redis.from_url(url)
    while True:
        popped = client.brpop(queues, timeout=1)
        if popped:
            return read_message(popped[1]), client


def take_amqp(url: str, queues: list[str]):
    from kombu import Connection

    conn = Connection(url)
    channel = conn.channel()
    while True:
        for queue in queues:
            message = channel.basic_get(queue, no_ack=False)
            if message is not None:
                payload = {
                    "headers": message.headers,
                    "body": message.body.decode()
                    if isinstance(message.body, bytes)
                    else message.body,
                    "properties": {"body_encoding": None},
                }
                return read_message(json.dumps(payload)), conn
        time.sleep(0.05)


def main(argv: list[str]) -> int:
    url, queues = argv[0], argv[1:]
    take = take_redis if url.startswith("redis://") else take_amqp
    message, keep = take(url, queues)
    print(f"took {message.task} {message.sync_id} {message.cursor}", flush=True)
    while True:  # never acked, never given back: held until this process dies
        time.sleep(3600)
    return keep  # pragma: no cover


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
