"""Limits as the providers announce them: one bucket per announced rule and key, in Redis.

Why. The configured quota (``QUOTA_<PROVIDER>``, ``state.quota``) is a guess
about a limit the provider states on every answer. A token of another kind
than the configured default has another limit (GitHub: 60, 1,000, 5,000,
12,500 or 15,000 per hour), an instance may change all of Mastodon's, and
the provider counts in its own windows. So here the provider's word is the
quota and the configuration only the prior: the first answer for a key (the
profile call, before any fan-out) sets that key's rules from its headers.

Rules. A provider documents its limits as ``AnnouncedRule``s (its class's
``ANNOUNCED_RULES``: limit, window, scope, which calls, whether its headers
always speak for the rule or only while it is the one closest to being
exceeded). Each rule is a bucket of its own inside one Redis hash per scope
key (``P:ann:{provider:scope:key}``), so one script takes from every rule
that applies to a call at once: a Mastodon paging call takes from the 300 /
5 min, the 1,500 / 5 min and the paging 300 / 15 min. Keys count as the
providers do (``Caller``): GitHub per provider account (every token of it,
a refreshed one too), X per endpoint of an account, Mastodon per account on
its instance, Bluesky per egress address per PDS host.

Windows, as the providers count them: a fixed window that the provider's
``reset`` ends (all four announce one). A rule holds, for its current
window, our calls counted in it (``g``) and the others' calls its counts
prove (``oth``); a call is granted while ``limit − oth − g`` covers it.

* The announced limit replaces the prior for that key while the provider
  keeps saying it (each report renews it for ``ttl_s``, at least two
  windows); without news it lapses back to the prior. A rule the headers
  always speak for and that has not been heard allows one call at a time
  (the *probe*): the gate never fans out on the strength of its config.
* When the window has surely ended (its reset plus ``skew_s``) the next
  script opens a new one with the *announced* limit, holding our calls still
  out (granted within the HTTP timeouts, ``max_margin_s``: they may reach
  the new window) and those answered so near the reset that they may have.
  Its end is the provider's next reset, or until told an upper bound: the
  next multiple of the window where windows are aligned (Mastodon), else
  one window after the latest arrival of a call granted now.
* The whole-second reset plus the skew costs up to two seconds a window. A
  window our own call opened (its answer says ``remaining = limit − 1``: the
  provider counted that call alone) began between the call's grant and its
  answer, so when the window's length is known (stated by a policy header, or
  the documented or configured window of the announced limit:
  ``QUOTA_<PROVIDER>``'s, passed as ``windows``) it ends within that length
  of the answer on our own clock, and the next window opens then.
* A report ``limit, remaining, reset``: the provider counted
  ``limit − remaining`` calls in its window; ours in it are at most ``g``,
  so the rest are someone else's: ``oth`` only grows. That never counts our
  own calls twice, so a fan-out's reports cost nothing, and a co-consumer of
  a pooled limit (another app of the same GitHub user) is seen as soon as an
  answer shows it. A reset later than the window we know means the provider
  has begun a new one.
* Several rules, one set of headers (Mastodon: "the one you are closest to
  exceeding"): a report goes to the rules with its limit whose window can
  hold its reset (an aligned rule's reset is a multiple of its window), the
  one whose known end matches if several; a limit no rule has is a limit the
  provider changed: the fitting rule nearest to it takes it. A report applied
  to a rule it was not for only lowers that rule, never raises it.
* ``retry-after`` (any status) blocks the key until it has passed.
* A probe answered with a success that announces nothing for its rules (a
  provider, or a proxy before it, that does not send the headers on this
  route) makes the rules *quiet* for ``ttl_s``: no more one-at-a-time
  probing; the prior (and the configured quota, where one is set) governs.
* Shared rules (scopes ``ip`` and ``app``) keep the queue classes' shares of
  ``state.quota``: whales leave ``normal`` its part.

What this cannot see: a co-consumer's calls between two of our answers (a
pooled limit can be spent by another app at any moment; its 429 is then
honoured), and a rule the headers never name while another is tighter
(Mastodon's 1,500 / 5 min per user, shared with the user's other apps).

The scripts are ``state/lua/announced_{take,answer}.lua`` with
``announced_prelude.lua``.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

from providers.announced import AnnouncedRule, Announcement, AnswerReport
from providers.provider import HttpCall, Provider
from state.keys import Keys
from state.lua import LuaScript
from state.quota import CLASS_LETTER, CLASS_POLICY, DEFAULT_SHARES, SHARED_KEYS

#: our clock vs the provider's: a reset counts as passed this much later
RESET_SKEW_S = 1.0
#: the longest a call stays unanswered (the default HTTP timeouts: 3.05 + 10 s)
DEFAULT_MAX_MARGIN_S = 13.05
#: an announced limit holds this long after the provider last said it (at least two windows)
ANNOUNCED_TTL_S = 3600.0
#: while a rule's probe is out, other calls come back after at most this long
PROBE_POLL_S = 0.25
#: scopes every sync of the provider shares (the queue-class shares apply)
SHARED_RULE_SCOPES = frozenset({"ip", "app"})

_KEY_PART = re.compile(r"[A-Za-z0-9._:@|/-]{1,120}")


@dataclass(frozen=True)
class Caller:
    """Who a call counts against, as the task layer knows it."""

    #: the provider account the credential belongs to (GitHub login, X id, DID, acct)
    account: str
    #: a non-reversible name of the credential (``Credential.fingerprint``)
    token: str
    #: the API host the call goes to (the Mastodon instance, the Bluesky PDS)
    host: str
    #: our egress address's name (workers behind one NAT share one); the same name
    #: as the configured quota's ``ip`` bucket (``state.quota.SHARED_KEYS``)
    egress: str = SHARED_KEYS["ip"]


@dataclass(frozen=True)
class BoundRules:
    """The rules of one provider that apply to one call, and the key they are kept under."""

    provider: str
    scope: str
    key: str
    redis_key: str
    rules: tuple[AnnouncedRule, ...]


@dataclass(frozen=True)
class AnnouncedGrant:
    """What ``take`` decided: granted (with what the answer settles), or a wait."""

    wait_s: float
    bound: BoundRules | None = None
    #: {rule id: window number} as the take counted the call
    ticket: str = ""
    second: str = ""
    probe: bool = False
    queue_class: str = "normal"
    cost: int = 1

    @property
    def granted(self) -> bool:
        return self.wait_s == 0.0


def key_part(text: str) -> str:
    """A scope key's part as it may appear in a Redis key (else its hash)."""
    if _KEY_PART.fullmatch(text):
        return text
    return "h-" + hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def scope_key(rule_scope: str, provider: Provider, call: HttpCall, caller: Caller) -> str:
    """The key a rule of ``rule_scope`` counts this call under, as the provider counts."""
    host = key_part(caller.host.lower())
    if rule_scope == "token":
        return f"{host}|{key_part(caller.token)}"
    if rule_scope == "account":
        return f"{host}|{key_part(caller.account)}"
    if rule_scope == "endpoint":
        return f"{host}|{key_part(caller.account)}|{key_part(provider.endpoint(call))}"
    if rule_scope == "ip":
        return f"{key_part(caller.egress)}@{host}"
    return f"app@{host}"


class AnnouncedGate:
    """Takes from and corrects the announced-rule buckets (see the module doc)."""

    def __init__(
        self,
        redis_client,
        key_prefix: str,
        clock=time.time,
        *,
        shares: Mapping[str, Mapping[str, float]] | None = None,
        max_margin_s: float = DEFAULT_MAX_MARGIN_S,
        skew_s: float = RESET_SKEW_S,
        ttl_s: float = ANNOUNCED_TTL_S,
        probe_poll_s: float = PROBE_POLL_S,
        windows: Mapping[str, Mapping[int, float]] | None = None,
    ):
        self.redis = redis_client
        self.keys = Keys(key_prefix)
        self.clock = clock
        self.shares = shares or {}
        #: per provider, limit → window of limits configured (``QUOTA_<PROVIDER>``):
        #: a window the headers do not state, known when the announced limit is one of these
        self.windows = windows or {}
        self.max_margin_s = max_margin_s
        self.skew_s = skew_s
        self.ttl_s = ttl_s
        self.probe_poll_s = probe_poll_s
        self._take = LuaScript(redis_client, "announced_take")
        self._answer = LuaScript(redis_client, "announced_answer")

    def bind(self, provider: Provider, call: HttpCall, caller: Caller) -> BoundRules | None:
        """The provider's rules that apply to ``call``, keyed; None when it announces none."""
        paging = provider.is_paging(call)
        rules = tuple(rule for rule in provider.ANNOUNCED_RULES if rule.applies(paging))
        if not rules:
            return None
        scope = rules[0].scope  # one scope per provider (check_provider_class)
        key = scope_key(scope, provider, call, caller)
        redis_key = self.keys.announced_rules(provider.NAME, scope, key)
        return BoundRules(provider.NAME, scope, key, redis_key, rules)

    def _args(self, bound: BoundRules, queue_class: str, now: float) -> dict:
        if queue_class not in CLASS_POLICY:
            raise ValueError(f"queue_class must be one of {tuple(CLASS_POLICY)}")
        shared = bound.scope in SHARED_RULE_SCOPES
        configured = self.windows.get(bound.provider, {})
        return {
            "now": round(now, 6),
            "rules": [
                {
                    "id": rule.rule_id,
                    "limit": rule.limit,
                    "window": rule.window_s,
                    "told": rule.told,
                    "aligned": rule.aligned,
                    "shared": shared,
                    "known": {
                        str(limit): window
                        for limit, window in {**configured, rule.limit: rule.window_s}.items()
                    },
                }
                for rule in bound.rules
            ],
            "class": CLASS_LETTER[queue_class],
            "skew": self.skew_s,
            "max_margin": self.max_margin_s,
            "ttl": self.ttl_s,
        }

    def take(self, bound: BoundRules, queue_class: str = "normal", cost: int = 1) -> AnnouncedGrant:
        """Take ``cost`` calls from every rule of ``bound``, or nothing and the wait."""
        reply = self._take(
            keys={"rules": bound.redis_key}, args=self._take_args(bound, queue_class, cost)
        )
        return self._grant(reply, bound, queue_class, cost)

    def queue_take(self, batch, bound: BoundRules, queue_class: str = "normal", cost: int = 1):
        """``take`` as a step of a ``state.batch.Batch``: its ``Reply`` holds the grant."""
        return self._take.queue(
            batch,
            keys={"rules": bound.redis_key},
            args=self._take_args(bound, queue_class, cost),
            read=lambda reply: self._grant(reply, bound, queue_class, cost),
        )

    def _take_args(self, bound: BoundRules, queue_class: str, cost: int) -> dict:
        shares = self.shares.get(bound.provider, DEFAULT_SHARES)
        return {
            **self._args(bound, queue_class, self.clock()),
            "cost": cost,
            "probe_poll": self.probe_poll_s,
            "shares": {CLASS_LETTER[c]: shares.get(c, 0.0) for c in CLASS_POLICY},
            "kinds": {CLASS_LETTER[c]: kind for c, kind in CLASS_POLICY.items()},
        }

    @staticmethod
    def _grant(reply, bound: BoundRules, queue_class: str, cost: int) -> AnnouncedGrant:
        if not int(reply[0]):
            wait = float(_s(reply[1]))
            if wait < 0:  # cannot be granted as the rules stand: look again after a window
                wait = max(rule.window_s for rule in bound.rules)
            return AnnouncedGrant(max(wait, 1e-3), bound, queue_class=queue_class, cost=cost)
        return AnnouncedGrant(
            0.0,
            bound,
            ticket=_s(reply[1]),
            second=_s(reply[2]),
            probe=bool(int(reply[3])),
            queue_class=queue_class,
            cost=cost,
        )

    def answer(
        self,
        bound: BoundRules,
        grant: AnnouncedGrant | None = None,
        report: AnswerReport | None = None,
        counted: bool = True,
        batch=None,
        ok: bool = False,
    ):
        """The call of ``grant`` was answered: account it, and apply ``report`` (its headers).

        ``counted=False``: the provider did not count it (a free ``304``), or
        it was never sent (its take is given back). Without ``grant``: only the
        headers. ``ok``: the answer was a success; a probe's success that
        announces nothing for these rules makes them quiet (no more probing: the
        provider, or a proxy before it, does not announce them here). Returns the
        ids of the rules the report was applied to (with ``batch``: the queued
        step's ``Reply``).
        """
        granted = grant is not None and grant.granted
        queue_class = grant.queue_class if granted else "normal"
        announced = _for_rules(report, bound.rules)
        probe = bool(granted and grant.probe)
        args = {
            **self._args(bound, queue_class, self.clock()),
            "ticket": json.loads(grant.ticket) if granted else None,
            "second": grant.second if granted else None,
            "cost": grant.cost if granted else 1,
            "counted": counted,
            "probe": probe,
            # a garbled header is no proof of silence: the next call probes again
            "silent": probe and ok and announced is None and not (report and report.malformed),
            "report": _report_arg(announced),
            "retry_after": report.retry_after if report is not None else None,
        }
        keys = {"rules": bound.redis_key}
        if batch is not None:
            return self._answer.queue(batch, keys=keys, args=args, read=_applied)
        return _applied(self._answer(keys=keys, args=args))

    def state(self, bound: BoundRules) -> dict:
        """Each rule's stored state (for ops, the dashboard and tests)."""
        raw = self.redis.hgetall(bound.redis_key)
        found = {}
        for rule in bound.rules:
            value = raw.get(f"r:{rule.rule_id}".encode()) or raw.get(f"r:{rule.rule_id}")
            found[rule.rule_id] = json.loads(value) if value else {}
        return found


def _for_rules(report: AnswerReport | None, rules) -> Announcement | None:
    """The announcement the rules can take: GitHub's headers also speak of other resources."""
    if report is None:
        return None
    resources = {rule.resource for rule in rules}
    for found in report.announcements:
        if None in resources or found.resource is None or found.resource in resources:
            return found
    return None


def _report_arg(found: Announcement | None) -> dict | None:
    if found is None:
        return None
    arg = {"limit": found.limit, "remaining": found.remaining}
    if found.reset_at is not None:
        arg["reset"] = round(found.reset_at, 6)
    if found.window_s is not None:
        arg["window"] = found.window_s
    return arg


def _applied(reply) -> list[str]:
    return json.loads(_s(reply))


def _s(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
