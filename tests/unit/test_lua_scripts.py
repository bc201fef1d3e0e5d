"""The Lua scripts of state/lua/ against their headers, and their keys against Redis' rule.

Three checks (the convention is in ``state/lua.py``):

1. **Header = body** (static). Each script's header lists its ``KEYS`` and
   its named arguments; its text (with the preludes it needs) must use
   exactly those: ``KEYS[1..n]`` with literal indices, ``ARGV[1]`` only in the
   one ``local args = cjson.decode(ARGV[1])``, and ``args.<name>`` for exactly
   the declared names.
2. **Header = Python** (run time). ``LuaScript`` refuses a call whose key or
   argument names differ from the header's. Below, every script is driven
   through its real Python caller (store, quota gate, delayed set) over its
   branches, and each call's names are recorded and compared with the
   header; every script must have been called.
3. **No key built in Lua**, twice:

   * statically (``tests/unit/lua_static.py``), a conservative rule: each
     argument in a *key position* of a ``redis.call`` (positions per command
     in ``KEY_POSITIONS``, checked here against the server's ``COMMAND
     INFO``) must be ``KEYS[n]`` or a local bound once to it; a ``..``
     concatenation, a parameter, a table field or an unknown command there
     fails. Fields, scores and members may be built freely.
   * dynamically, over the same runs as check 2: the scripts are sent with a
     test-only prelude that asks the server (``COMMAND GETKEYS``) which keys
     each command touches and fails the script on any key not in ``KEYS``.
     This sees only the branches the runs take; the static rule sees all.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

from providers.provider import Page, Provider
from providers.ratelimits import RateLimitInfo
from state import lua
from state.batch import Batch
from state.breaker import BreakerConfig, CircuitBreaker
from state.delayed import DelayedSet
from state.keys import Keys
from state.liveness import Liveness
from state.lua import LUA_DIR, LuaScript, ScriptCallError, parse_header, script_spec
from state.page_guard import guard_args
from state.quota import QuotaConfig, QuotaGate
from state.store import SyncStore
from tests.conftest import ManualClock
from tests.quota_helpers import acquire, fingerprint
from tests.unit.lua_static import (
    KEY_POSITIONS,
    MOVABLE_NUMKEYS,
    is_keys_ref,
    key_problems,
    tokens,
)

#: state against a real Redis: also run on a Redis Cluster (make integration-cluster)
pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(p.stem for p in LUA_DIR.glob("*.lua") if not p.stem.endswith("_prelude"))
PRELUDES = sorted(p.stem for p in LUA_DIR.glob("*_prelude.lua"))


def full_text(name: str) -> str:
    return script_spec(name).text


# -- 1. header = body ---------------------------------------------------------------------
@pytest.mark.parametrize("name", SCRIPTS + PRELUDES)
def test_the_header_names_the_file_and_lists_keys_and_arguments(name):
    text = lua.read(name)
    assert text.startswith(f"-- {name}: "), f"{name}.lua must open with '-- {name}: what it does'"
    header = parse_header(text, name)
    assert header.keys, f"{name}.lua lists no KEYS"
    assert header.args or header.needs, f"{name}.lua lists no arguments"


@pytest.mark.parametrize("name", SCRIPTS)
def test_the_script_uses_exactly_the_keys_its_header_lists(name):
    spec = script_spec(name)
    toks = tokens(spec.text)
    used = set()
    for i, tok in enumerate(toks):
        if tok == ("name", "KEYS"):
            n = is_keys_ref(toks[i : i + 4])
            assert n is not None, f"{name}: KEYS only with a literal index, not {toks[i : i + 4]}"
            used.add(n)
    assert used == set(range(1, len(spec.keys) + 1)), (
        f"{name}: uses KEYS{sorted(used)}, its header lists {list(spec.keys)}"
    )


@pytest.mark.parametrize("name", SCRIPTS)
def test_the_script_decodes_argv1_once_and_reads_exactly_its_declared_arguments(name):
    spec = script_spec(name)
    toks = tokens(spec.text)
    argv = [i for i, tok in enumerate(toks) if tok == ("name", "ARGV")]
    assert len(argv) == 1, f"{name}: ARGV appears {len(argv)} times (one JSON argument: once)"
    i = argv[0]
    assert [t[1] for t in toks[i - 7 : i + 4]] == [
        "local",
        "args",
        "=",
        "cjson",
        ".",
        "decode",
        "(",
        "ARGV",
        "[",
        "1",
        "]",
    ], f"{name}: ARGV only in 'local args = cjson.decode(ARGV[1])'"
    read, others = set(), []
    for j, tok in enumerate(toks):
        if tok == ("name", "args") and j != i - 6:
            if toks[j - 1] == ("op", "."):  # a field named args, not the variable
                continue
            if toks[j + 1] == ("op", ".") and toks[j + 2][0] == "name":
                read.add(toks[j + 2][1])
            else:
                others.append(toks[j - 1 : j + 2])
    assert not others, f"{name}: args used other than as args.<name>: {others}"
    assert read == set(spec.args), (
        f"{name}: reads {sorted(read)}, its header (with preludes) lists {sorted(spec.args)}"
    )


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_prelude_a_script_needs_is_a_prelude_file(name):
    for prelude in script_spec(name).header.needs:
        assert prelude in PRELUDES


# -- 3a. no key built in Lua (static) ------------------------------------------------------
@pytest.mark.parametrize("name", SCRIPTS)
def test_every_key_position_of_every_redis_call_is_a_key_from_keys(name):
    assert key_problems(full_text(name)) == [], name


def test_the_static_rule_catches_a_built_key():
    head = "local args = cjson.decode(ARGV[1])\nlocal rec = KEYS[1]\n"
    assert key_problems(head + "redis.call('HGET', rec, 'f' .. args.x)") == []  # a field
    assert key_problems(head + "redis.call('ZDIFFSTORE', rec, 2, KEYS[2], rec)") == []
    for body in (
        "redis.call('HGET', rec .. ':done', 'f')",
        "redis.call('HGET', 'netsync:' .. args.user, 'f')",
        "redis.call('GET', args.key)",
        "redis.call('ZDIFFSTORE', rec, 2, KEYS[2], args.other)",
        "redis.call('DEL', rec, KEYS[2], rec .. 'x')",
        "local function f(rec) return redis.call('GET', rec) end",
        "rec = args.other\nredis.call('GET', rec)",
        "local call = redis.call\ncall('GET', 'x')",
        "redis.call(args.command, rec)",
        "redis.call('GET', unpack(KEYS))",
        "redis.call('COPY', rec, 'other')",
    ):
        assert key_problems(head + body), body


def test_key_positions_are_the_servers(redis_client):
    info = redis_client.execute_command("COMMAND", "INFO", *KEY_POSITIONS)
    for command, (first, last, step) in KEY_POSITIONS.items():
        server = info[command.lower()]
        assert (server["first_key_pos"], server["last_key_pos"], server["step_count"]) == (
            first,
            last,
            step,
        ), command
        assert ("movablekeys" in server["flags"]) == (command in MOVABLE_NUMKEYS), command


# -- 2 and 3b. header = Python, and no undeclared key (run time) -----------------------------
CHECK_PRELUDE = """
local real_redis = redis
local declared = {}
for _, k in ipairs(KEYS) do declared[k] = true end
local function checked(fn)
  return function(cmd, ...)
    local found = real_redis.pcall('COMMAND', 'GETKEYS', cmd, ...)
    if type(found) == 'table' and found.err == nil then
      for _, k in ipairs(found) do
        if not declared[k] then error('undeclared key ' .. k .. ' in ' .. cmd) end
      end
    end
    return fn(cmd, ...)
  end
end
local redis = setmetatable({call = checked(real_redis.call), pcall = checked(real_redis.pcall)},
                           {__index = real_redis})
"""


@pytest.fixture
def checked_scripts(monkeypatch):
    """Scripts sent with CHECK_PRELUDE; every call's key and argument names recorded."""
    original_spec, original_checked = lua.script_spec, LuaScript._checked
    seen = defaultdict(set)

    def spec(name):
        found = original_spec(name)
        return lua.ScriptSpec(
            found.name,
            CHECK_PRELUDE + found.text,
            found.header,
            found.keys,
            found.optional_keys,
            found.args,
            found.optional_args,
        )

    def checked(self, keys, args):  # every call, alone or queued in a batch (state.batch)
        seen[self.name].add((tuple(keys), tuple(sorted(args))))
        return original_checked(self, keys, args)

    monkeypatch.setattr(lua, "script_spec", spec)
    monkeypatch.setattr(LuaScript, "_checked", checked)
    return seen


def drive_store(redis_client, prefix):
    clock = ManualClock()
    store = SyncStore(redis_client, prefix, clock=clock)

    def begin(user="u", force=False):
        return store.begin_sync(
            user_id=user,
            provider="github",
            relation="followers",
            account_id="a",
            queue="normal",
            trigger="test",
            force=force,
            freshness_s=900,
            stale_s=3600,
        )

    def finish(ticket) -> str:
        """What the engine does after PostgreSQL committed (sync.finalize)."""
        record = store.get_sync(ticket.sync_id)
        count = len(dict(store.staged_connections(ticket.sync_id)))
        assert store.finish(ticket.sync_id, record["finalizing"], count, count, 0, True)
        assert not store.finish(ticket.sync_id, record["finalizing"], count, count, 0, True)
        return store.get_sync(ticket.sync_id)["status"]

    first = begin()
    assert first.created and begin(force=True).sync_id == first.sync_id  # in flight
    store.mark_running(first.sync_id)
    assert store.add_pending(first.sync_id, "", ["p0", "p1"]) == ["new", "new"]
    assert store.add_pending(first.sync_id, "", ["p1"]) == ["rerun"]
    assert store.add_pending(first.sync_id, "p9", ["p1"]) == ["repeat"]
    assert (
        store.complete_page(
            first.sync_id,
            "p0",
            [("1", "a"), ("2", "b")],
            rate_fields={"rate_remaining": "9"},
            count_call=True,
        )
        == "completed"
    )
    assert store.complete_page(first.sync_id, "p0", []) == "duplicate"
    assert store.complete_page(first.sync_id, "p1", [("3", "c")], "page_limit") == "finalize"
    assert not store.fail(first.sync_id, "failed", "internal_error", "finalizing")
    assert finish(first) == "partial"
    assert store.complete_page(first.sync_id, "p1", []) == "inactive"
    assert store.add_pending(first.sync_id, "p1", ["p2"]) == []
    assert begin().status == "fresh"
    clock.now += 1000
    second = begin()  # a resync that finds nothing: the empty-network branch
    store.add_pending(second.sync_id, "", ["p0"])
    assert store.complete_page(second.sync_id, "p0", []) == "finalize"
    assert finish(second) == "succeeded"
    clock.now += 1000
    guarded = begin()  # the page guard's branches (guard_prelude.lua)
    store.add_pending(guarded.sync_id, "", ["g0"])
    one = Page([("1", "a")], next_cursor="g1")
    assert store.launch_pages(
        guarded.sync_id, "g0", ["g1"], guard_args(GUARDED, "g0", one, ["g1"], 1, None)
    ) == ("", ["new"])
    assert store.launch_pages(
        guarded.sync_id, "g1", ["g2"], guard_args(GUARDED, "g1", one, ["g2"], 2, None)
    ) == ("repeated_page", [])
    assert (
        store.complete_page(
            guarded.sync_id,
            "g0",
            one.connections,
            guard=guard_args(GUARDED, "g0", one, [], 1, None),
        )
        == "completed"
    )
    clock.now += 1000
    third = begin()
    clock.now += 4000  # stale: a new sync replaces it
    fourth = begin()
    assert fourth.created and fourth.sync_id != third.sync_id
    assert store.fail(fourth.sync_id, "failed", "internal_error", "boom")
    assert not store.fail(fourth.sync_id, "failed", "internal_error", "again")
    user = Keys(prefix).user("github", "u")
    net = user.relation("followers")
    retry = store._begin(
        keys={
            "inflight": net.inflight,
            "last": net.last,
            "record": user.sync("s_x").record,
            "seen_record": None,
        },
        args={
            "sync_id": "s_x",
            "now": "1",
            "freshness_s": 1,
            "stale_s": 1,
            "force": True,
            "seen": "s_gone",
            "fields": {},
        },
    )
    assert retry[0] == b"retry"


class _Guarded(Provider):
    NAME = "github"
    PAGE_SIZE = 50
    ONE_ITEM_RUN_LIMIT = 3


GUARDED = _Guarded("http://x")


def drive_quota(redis_client, prefix):
    clock = ManualClock()
    gate = QuotaGate(
        redis_client,
        prefix,
        QuotaConfig.from_env(
            {
                "QUOTA_GITHUB": "5000/3600/token",
                "QUOTA_FACEBOOK": "2/60/token,2/60/app",
                "QUOTA_LINKEDIN": "100/60/app/adaptive",
            }
        ),
        clock=clock,
    )
    token = {"token": fingerprint("t")}
    grant = gate.decide("github", token, "normal")
    assert grant.granted
    clock.now += 0.5
    gate.settle(grant)  # moves the call to its answer's sub-window
    gate.observe(
        "github", token, RateLimitInfo(limit=5000, remaining=4999, reset_at=clock.now + 3600)
    )
    gate.observe("github", token, RateLimitInfo(retry_after=30.0))
    assert acquire(gate, "github", token, "normal") > 0
    assert acquire(gate, "facebook", token, "normal") == 0
    assert acquire(gate, "facebook", token, "normal") == 0
    assert acquire(gate, "facebook", token, "normal") > 0  # token refuses: app peeked
    other = {"token": fingerprint("u")}
    assert acquire(gate, "facebook", other, "normal") > 0  # app refuses: token refunded
    gate.observe("facebook", {"app": "all"}, RateLimitInfo(usage_percent=50.0))
    gate.record_outcome("linkedin", {"app": "all"}, rejected=False)
    gate.record_outcome("linkedin", {"app": "all"}, rejected=True)


def drive_delayed(redis_client, prefix):
    clock = ManualClock()
    delayed = DelayedSet(redis_client, prefix, clock=clock)
    delayed.park("t.task", [1], {}, "normal", 0)
    redis_client.zadd(delayed.due_key, {"gone": 0})  # released while the claim looked
    assert [t.task_name for t in delayed.claim_due()] == ["t.task"]
    delayed.park("t.task", [2], {}, "normal", 0)
    assert [t.args for t in delayed.claim_due(claimer="sched-a")] == [[2]]


def drive_breaker(redis_client, prefix):
    clock = ManualClock()
    breaker = CircuitBreaker(redis_client, prefix, BreakerConfig(threshold=1), clock=clock)
    breaker.allow("github")
    breaker.record("github", ok=False, kind="unavailable")  # opens it
    breaker.allow("github")  # wait
    clock.now += 10
    batch = Batch(redis_client)
    look = breaker.queue_peek(batch, "github")
    batch.execute()
    assert look.value.verdict == "probe_due"  # a look claims nothing
    breaker.allow("github")  # the probe
    breaker.record("github", ok=True)


def drive_liveness(redis_client, prefix):
    liveness = Liveness(redis_client, prefix)
    liveness.beat("w1", {}, lost_s=60)
    liveness.hold("w1", "task-1", {"task": "github.page", "args": ["s_1", "p2"]})
    assert liveness.take_over("w1") is None  # it beats
    redis_client.delete(liveness.keys.beat("w1"))
    assert liveness.take_over("w1") == {"task-1": {"task": "github.page", "args": ["s_1", "p2"]}}
    assert liveness.lease("sweep", "a", 60) and not liveness.lease("sweep", "b", 60)
    liveness.give_up("sweep", "a")


def drive_announced(redis_client, prefix):
    """The announced rules (state.announced): probe, headers, retry-after, a refund."""
    from providers.announced import Announcement, AnswerReport
    from providers.github import GitHub
    from state.announced import AnnouncedGate, Caller

    clock = ManualClock()
    gate = AnnouncedGate(redis_client, prefix, clock)
    github = GitHub("https://api.github.com")
    bound = gate.bind(github, github.profile_call("octocat"), Caller("octocat", "ab" * 8, "h"))
    probe = gate.take(bound)
    assert probe.granted and not gate.take(bound).granted  # one call until heard
    gate.answer(bound, probe, AnswerReport((Announcement(10, 9, clock.now + 5),)))
    gate.answer(bound, gate.take(bound), counted=False)  # a free 304
    gate.answer(bound, None, AnswerReport((Announcement(10, 0, clock.now + 5),), retry_after=2.0))


def drive_call_gate(redis_client, prefix):
    """The concurrency lease and the spend budget, through state.admission.CallGate."""
    from providers.github import GitHub
    from providers.twitter import Twitter
    from state.admission import CallGate
    from state.announced import Caller
    from state.spend_settings import SpendSettings

    clock = ManualClock()
    spend = SpendSettings.from_env({"BUDGET_TWITTER": "25/day"})
    gate = CallGate(redis_client, prefix, spend, clock=clock)
    github, twitter = GitHub("https://api.github.com"), Twitter("https://api.twitter.com")
    caller = Caller("octocat", "ab" * 8, "api.github.com")
    leased = gate.before(github, github.profile_call("octocat"), caller)
    assert leased.granted and leased.lease is not None
    gate.abandon(leased)  # not sent: lease, probe and count given back
    page = twitter.page_call("42", "token:")
    paid = gate.before(twitter, page, caller)  # $10 reserved of $25
    assert paid.granted and paid.reservation.granted
    told = {"x-rate-limit-limit": "300", "x-rate-limit-remaining": "299"}
    gate.after(paid, {**told, "x-rate-limit-reset": str(int(clock.now) + 900)}, resources=1000)
    second = gate.before(twitter, page, caller)
    assert second.granted
    third = gate.before(twitter, page, caller)  # $5 left: a page of 500 items
    assert third.granted and third.most_resources == 500
    assert gate.before(twitter, page, caller).reason == "spend_budget"  # held by the others
    gate.after(second, resources=1000)
    gate.after(third, resources=500)
    assert gate.before(twitter, page, caller).wait_s > 3600  # $25 spent: tomorrow


def test_every_script_is_called_as_its_header_says_and_touches_only_its_keys(
    checked_scripts, redis_client, key_prefix
):
    drive_store(redis_client, key_prefix)
    drive_quota(redis_client, key_prefix)
    drive_delayed(redis_client, key_prefix)
    drive_breaker(redis_client, key_prefix)
    drive_liveness(redis_client, key_prefix)
    drive_announced(redis_client, key_prefix)
    drive_call_gate(redis_client, key_prefix)
    assert sorted(checked_scripts) == SCRIPTS, "every script must be exercised here"
    for name, calls in checked_scripts.items():
        spec = script_spec(name)
        for keys, args in calls:
            assert keys == spec.keys and args == tuple(sorted(spec.args)), name


def test_the_run_time_check_refuses_a_key_outside_keys(checked_scripts, redis_client, key_prefix):
    import redis

    store = SyncStore(redis_client, key_prefix)
    script = redis_client.register_script(CHECK_PRELUDE + "return redis.call('GET', 'elsewhere')")
    with pytest.raises(redis.ResponseError, match="undeclared key elsewhere"):
        script(keys=[store.keys.recent])


def test_a_call_with_other_names_than_the_header_is_refused(redis_client, key_prefix):
    script = LuaScript(redis_client, "mark_running")
    with pytest.raises(ScriptCallError):
        script(keys={"rec": "x"}, args={"now": "1"})
    with pytest.raises(ScriptCallError):
        script(keys={"record": "x"}, args={"now": "1", "extra": 1})
    with pytest.raises(ScriptCallError):
        script(keys={"record": "x"}, args={"now": None})
    begin = LuaScript(redis_client, "begin")
    with pytest.raises(ScriptCallError):  # only a trailing optional key may be left out
        begin(keys={"inflight": None, "last": "l", "record": "r", "seen_record": "s"}, args={})


# -- key names are built in state/keys.py only ----------------------------------------------
#: pieces of netsync key names; a string holding one, outside state/keys.py, builds a key
KEY_PIECES = (
    ":sync:",
    ":pending",
    ":done",
    ":staging",
    ":network",
    ":inflight",
    ":last",
    ":cred",
    ":refresh:",
    ":guard",
    ":quota:",
    "{delayed}",
    ":syncs",
    ":synced_at",
    ":recent",
    ":metrics",
    ":delivery:",
    ":added",
    ":removed",
)


def test_key_names_are_built_only_in_state_keys():
    found = []
    for layer in ("state", "sync", "service"):
        for path in sorted((ROOT / layer).rglob("*.py")):
            if path == ROOT / "state" / "keys.py":
                continue
            tree = ast.parse(path.read_text())
            docstrings = {
                id(node.body[0].value)
                for node in ast.walk(tree)
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
                and node.body
                and isinstance(node.body[0], ast.Expr)
            }
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and id(node) not in docstrings
                    and any(piece in node.value for piece in KEY_PIECES)
                ):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not found, "build key names in state/keys.py:\n" + "\n".join(found)
