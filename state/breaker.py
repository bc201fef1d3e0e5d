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

Key (its own hash tag)::

    <prefix>:{breaker:<provider>}   HASH state, failures, open_until, cooldown, probe_until
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

# KEYS[1] breaker hash. ARGV: now, probe lease, probe poll. -> {verdict, wait}
# verdict: "closed" (clean, nothing to report on success), "go" (calls flow but
# failures are being counted), "probe" (this caller is the probe), "wait".
_ALLOW = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state or state == 'closed' then
  local failures = tonumber(redis.call('HGET', KEYS[1], 'failures') or '0')
  if failures == 0 then return {'closed', '0'} end
  return {'go', '0'}
end
local now = tonumber(ARGV[1])
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
local kind = redis.call('HGET', KEYS[1], 'last_kind') or ''
if now < open_until then return {'wait', tostring(open_until - now), kind} end
local probe_until = tonumber(redis.call('HGET', KEYS[1], 'probe_until') or '0')
if now < probe_until then  -- the probe is out: look again soon (it may close the breaker)
  return {'wait', tostring(math.min(probe_until - now, tonumber(ARGV[3]))), kind}
end
redis.call('HSET', KEYS[1], 'state', 'half_open', 'probe_until', now + tonumber(ARGV[2]))
return {'probe', '0'}
"""

# KEYS[1]. ARGV: now, ok (1/0), threshold, base cooldown, max cooldown, error kind. -> new state
_RECORD = """
local now, ok = tonumber(ARGV[1]), ARGV[2] == '1'
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if ok then
  redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', 0, 'cooldown', ARGV[4],
             'probe_until', 0)
  return 'closed'
end
redis.call('HSET', KEYS[1], 'last_kind', ARGV[6])
if state == 'open' then return 'open' end  -- a call that was in flight when it opened
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local cooldown = tonumber(redis.call('HGET', KEYS[1], 'cooldown') or ARGV[4])
if state == 'half_open' then
  cooldown = math.min(cooldown * 2, tonumber(ARGV[5]))
elseif failures < tonumber(ARGV[3]) then
  return 'closed'
end
redis.call('HSET', KEYS[1], 'state', 'open', 'open_until', now + cooldown, 'cooldown', cooldown,
           'probe_until', 0)
return 'open'
"""


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
    #: "closed", "go", "probe" or "wait"
    verdict: str
    wait_s: float = 0.0
    #: while open: the error kind of the last failure (what the provider answered)
    last_kind: str = ""

    @property
    def allowed(self) -> bool:
        return self.verdict != "wait"


class CircuitBreaker:
    def __init__(self, redis_client, key_prefix: str, config: BreakerConfig = BreakerConfig(),
                 clock: Callable[[], float] = time.time):
        self.redis = redis_client
        self.prefix = key_prefix
        self.config = config
        self.clock = clock
        self._allow = redis_client.register_script(_ALLOW)
        self._record = redis_client.register_script(_RECORD)

    def key(self, provider: str) -> str:
        return f"{self.prefix}:{{breaker:{provider}}}"

    def allow(self, provider: str) -> Verdict:
        verdict, wait, *kind = self._allow(keys=[self.key(provider)],
                                           args=[repr(self.clock()), self.config.probe_lease_s,
                                                 self.config.probe_poll_s])
        return Verdict(_text(verdict), float(wait), _text(kind[0]) if kind else "")

    def record(self, provider: str, ok: bool, kind: str = "") -> str:
        """A call's outcome: ``ok`` is any answer that is not the provider failing
        (``kind``: the taxonomy's name of the failure)."""
        cfg = self.config
        return _text(self._record(keys=[self.key(provider)], args=[
            repr(self.clock()), "1" if ok else "0", cfg.threshold, cfg.cooldown_s,
            cfg.max_cooldown_s, kind]))

    def state(self, provider: str) -> dict:
        return {_text(k): _text(v) for k, v in self.redis.hgetall(self.key(provider)).items()}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
