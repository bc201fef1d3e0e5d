"""A circuit breaker per provider, in Redis, shared by every worker.

When a provider keeps failing (5xx, timeouts, connection errors: the
taxonomy's BACKOFF), retrying each page on its own schedule multiplies the
calls to a provider that is down by the number of pages in flight. The
breaker makes it one question per provider instead:

- **closed**: calls go through; ``threshold`` consecutive failures open it.
- **open** until ``opened_at + cooldown``: no call goes out; pages are
  parked in the delayed set until then (``allow`` says how long).
- **half-open**: the first caller after the cooldown is the *probe* (one at
  a time: a lease of ``probe_lease_s``); everyone else keeps waiting. The
  probe's success closes the breaker; its failure opens it again with the
  cooldown doubled (up to ``max_cooldown_s``).

So during an outage the provider sees at most ``threshold`` failures plus
the calls already in flight when it opened, then one probe per cooldown.

Key (its own hash tag): ``state.keys.Keys.breaker``; scripts:
``state/lua/breaker_allow.lua`` and ``breaker_record.lua``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from state.keys import Keys
from state.lua import LuaScript


@dataclass(frozen=True)
class BreakerConfig:
    #: consecutive failures that open the breaker
    threshold: int = 5
    #: first cooldown while open (doubles after a failed probe)
    cooldown_s: float = 5.0
    max_cooldown_s: float = 60.0
    #: how long the probe holds its turn (longer than one call with its timeouts)
    probe_lease_s: float = 20.0
    #: how soon a page parked behind a probe in flight looks again
    probe_poll_s: float = 1.0


@dataclass(frozen=True)
class Verdict:
    #: "closed", "go", "probe", "wait" or (a peek only) "probe_due"
    verdict: str
    wait_s: float = 0.0
    #: while open: the error kind of the last failure (what the provider answered)
    last_kind: str = ""

    @property
    def allowed(self) -> bool:
        return self.verdict != "wait"


class CircuitBreaker:
    def __init__(
        self,
        redis_client,
        key_prefix: str,
        config: BreakerConfig = BreakerConfig(),
        clock: Callable[[], float] = time.time,
    ):
        self.redis = redis_client
        self.keys = Keys(key_prefix)
        self.config = config
        self.clock = clock
        self._allow = LuaScript(redis_client, "breaker_allow")
        self._record = LuaScript(redis_client, "breaker_record")

    def key(self, provider: str) -> str:
        return self.keys.breaker(provider)

    def allow(self, provider: str) -> Verdict:
        return _verdict(
            self._allow(keys={"breaker": self.key(provider)}, args=self._allow_args(claim=True))
        )

    def queue_peek(self, batch, provider: str):
        """The verdict without claiming a probe, as a step of a ``state.batch.Batch``.

        For a caller that looks before it knows it will call (the page task's
        first round trip): a "probe_due" verdict means it must ``allow`` to
        become the probe; every other verdict is what ``allow`` would say."""
        return self._allow.queue(
            batch,
            keys={"breaker": self.key(provider)},
            args=self._allow_args(claim=False),
            read=_verdict,
        )

    def _allow_args(self, claim: bool) -> dict:
        return {
            "now": self.clock(),
            "probe_lease": self.config.probe_lease_s,
            "probe_poll": self.config.probe_poll_s,
            "claim": claim,
        }

    def record(self, provider: str, ok: bool, kind: str = "") -> str:
        """A call's outcome: ``ok`` is any answer that is not the provider failing
        (``kind``: the taxonomy's name of the failure)."""
        cfg = self.config
        return _text(
            self._record(
                keys={"breaker": self.key(provider)},
                args={
                    "now": self.clock(),
                    "ok": ok,
                    "threshold": cfg.threshold,
                    "cooldown": cfg.cooldown_s,
                    "max_cooldown": cfg.max_cooldown_s,
                    "kind": kind,
                },
            )
        )

    def state(self, provider: str) -> dict:
        return {_text(k): _text(v) for k, v in self.redis.hgetall(self.key(provider)).items()}


def _verdict(reply) -> Verdict:
    verdict, wait, *kind = reply
    return Verdict(_text(verdict), float(wait), _text(kind[0]) if kind else "")


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
