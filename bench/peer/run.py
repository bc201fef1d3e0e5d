"""netsync against the peer (bench/peer/app.py) on the same workloads and the same simulator.

1. **a whale under a published limit** (GitHub, 100 calls per 5 s per token,
   announced in headers): sync time ÷ the limit's bound, 429s the provider
   sent. netsync's side is the quota benchmark's same case.
2. **normal logins beside 3 whales** (the isolation benchmark's plan and
   80 ± 20 ms latency): the peer on one queue, two worker processes with
   the same pools and slots as netsync's isolation cases; normal
   trigger-to-done p99. netsync's side is isolation case (b) (its split queues).
3. **a worker killed mid-whale** (kill -9 of the worker's process group once
   a third of the network is stored, a new worker started; the broker's
   visibility timeout is ``VISIBILITY_S`` for both): connections lost
   (in the truth, not stored) or extra (stored, not in the truth), pages
   fetched again, and time to a complete network.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import time

import redis
import requests

from bench.stats import percentile
from devtools.devstack import ROOT, DevStack, WorkerSpec, stop_process, temp_var_dir

VISIBILITY_S = 15
KILL_SIZE = 30_000
KILL_LATENCY_MS = {"mean": 10, "jitter": 0}
GENEROUS_QUOTA = "1000000/3600/token"


class PeerWorkers:
    """The peer's Celery worker processes on a DevStack's Redis (broker and store)."""

    def __init__(self, stack: DevStack, rate_limit: str = ""):
        from celery import Celery

        self.stack = stack
        self.env = {
            **stack.base_env,
            "PEER_BROKER_URL": stack.redis_url,
            "PEER_REDIS_URL": stack.redis_url,
            "PEER_RATE_LIMIT": rate_limit,
            "PEER_VISIBILITY_TIMEOUT": str(VISIBILITY_S),
        }
        self.client = Celery("peer-driver", broker=stack.redis_url)
        self.client.conf.broker_transport_options = {"visibility_timeout": VISIBILITY_S}
        self.procs: dict[str, subprocess.Popen] = {}
        self.redis = redis.Redis.from_url(stack.redis_url, decode_responses=True)

    def start(self, name: str, pool: str, slots: int) -> subprocess.Popen:
        log = open(self.stack.var_dir / f"peer-{name}.log", "ab")  # noqa: SIM115 - the child process writes to it after we return
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.peer.app",
            "worker",
            "-Q",
            "peer",
            "-P",
            pool,
            "-c",
            str(slots),
            "-n",
            f"{name}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "WARNING",
        ]
        self.procs[name] = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        return self.procs[name]

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answered = {
                n.split("@")[0] for r in (self.client.control.ping(timeout=0.5) or []) for n in r
            }
            if set(self.procs) <= answered:
                return
        raise RuntimeError("peer workers not ready")

    def sync(self, user_id: str, account: dict) -> float:
        sent = time.time()
        self.client.send_task(
            "peer.sync_followers",
            queue="peer",
            args=[user_id, account["id"], account["token"], f"{self.stack.simulator_url}/github"],
        )
        return sent

    def finished(self, user_id: str) -> float | None:
        value = self.redis.hget(f"peer:{user_id}:sync", "finished")
        return float(value) if value else None

    def wait_done(self, user_ids: list[str], timeout: float) -> dict[str, float]:
        deadline, done = time.monotonic() + timeout, {}
        while len(done) < len(user_ids) and time.monotonic() < deadline:
            for user in user_ids:
                if user not in done and (t := self.finished(user)) is not None:
                    done[user] = t
            time.sleep(0.05)
        return done

    def stop(self) -> None:
        for proc in self.procs.values():
            stop_process(proc)
        self.client.close()


def github_calls(stack: DevStack, token: str | None = None) -> list[dict]:
    params = {"provider": "github", **({"token": token} if token else {})}
    return requests.get(f"{stack.simulator_url}/_sim/calls", params=params, timeout=60).json()[
        "calls"
    ]


def truth(stack: DevStack, account_id: str) -> set[str]:
    return set(
        requests.get(f"{stack.simulator_url}/_sim/truth/github/{account_id}", timeout=60).json()[
            "ids"
        ]
    )


# -- 1. a whale under a published limit ---------------------------------------------------
def whale_under_limit(case) -> dict:
    scenario = {
        "rate_limits": {
            "github": {"limit": case.limit, "window_s": case.window_s, "scope": "token"}
        }
    }
    stack = DevStack(
        var_dir=temp_var_dir("netsync-bench-peer-"),
        workers=[],
        web=False,
        scheduler=False,
        scenario=scenario,
    )
    with stack:
        peer = PeerWorkers(stack, rate_limit=f"{case.rate:g}/s")
        try:
            for i in range(2):  # the quota benchmark's 2 worker processes x 2
                peer.start(f"peer{i}", "prefork", 2)
            peer.wait_ready()
            account = {
                "provider": "github",
                "id": "peer-whale",
                "size": case.size,
                "token": "tok-peer-whale",
            }
            requests.post(
                f"{stack.simulator_url}/_sim/accounts", json={"accounts": [account]}, timeout=10
            ).raise_for_status()
            sent = peer.sync("peer-whale-user", account)
            done = peer.wait_done(["peer-whale-user"], timeout=600)
            calls = github_calls(stack, account["token"])
            stored = peer.redis.scard("peer:peer-whale-user:followers")
        finally:
            peer.stop()
    seconds = done["peer-whale-user"] - sent
    ideal = case.pages / case.rate
    return {
        "limit": case.name,
        "size": case.size,
        "seconds": round(seconds, 2),
        "ideal_s": ideal,
        "ratio": round(seconds / ideal, 3),
        "calls": len(calls),
        "http_429": sum(1 for c in calls if c["rate_limited"]),
        "stored": stored,
    }


# -- 2. normal logins beside whales, one queue ---------------------------------------------
def beside_whales(
    scenario: dict,
    latency_ms: dict,
    normal_slots: int,
    whale_slots: int,
    pool: str,
    whale_lead_s: float,
) -> dict:
    accounts = scenario["normals"] + scenario["whales"]
    stack = DevStack(
        var_dir=temp_var_dir("netsync-bench-peer-iso-"),
        workers=[],
        web=False,
        scheduler=False,
        scenario={"seed": 5, "latency_ms": latency_ms, "accounts": accounts},
    )
    with stack:
        peer = PeerWorkers(stack)
        try:
            peer.start("peer-a", pool, normal_slots)
            peer.start("peer-b", pool, whale_slots)
            peer.wait_ready()
            for i, whale in enumerate(scenario["whales"]):
                peer.sync(f"peer-whale-{i}", whale)
            time.sleep(whale_lead_s)
            begin, sent = time.monotonic(), {}
            for i, (offset, account) in enumerate(zip(scenario["arrivals"], scenario["normals"])):
                delay = begin + offset - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                sent[f"peer-user-{i}"] = peer.sync(f"peer-user-{i}", account)
            done = peer.wait_done(list(sent), timeout=600)
        finally:
            peer.stop()
    latencies = [done[u] - t for u, t in sent.items() if u in done]
    return {
        "n": len(latencies),
        "unfinished": len(sent) - len(latencies),
        "p50_s": round(percentile(latencies, 50), 3),
        "p95_s": round(percentile(latencies, 95), 3),
        "p99_s": round(percentile(latencies, 99), 3),
        "latencies_s": [round(x, 4) for x in latencies],
        "setup": f"one queue 'peer', two worker processes {pool} {normal_slots} + {whale_slots} slots",
    }


# -- 3. a worker killed mid-whale --------------------------------------------------------------
def killed_mid_whale_peer() -> dict:
    account = {"provider": "github", "id": "peer-kill", "size": KILL_SIZE, "token": "tok-peer-kill"}
    stack = DevStack(
        var_dir=temp_var_dir("netsync-bench-peer-kill-"),
        workers=[],
        web=False,
        scheduler=False,
        scenario={"latency_ms": KILL_LATENCY_MS, "accounts": [account]},
    )
    with stack:
        peer = PeerWorkers(stack)
        try:
            victim = peer.start("victim", "prefork", 2)
            peer.wait_ready()
            sent = peer.sync("peer-kill-user", account)
            key = "peer:peer-kill-user:followers"
            _wait(lambda: peer.redis.scard(key) >= KILL_SIZE // 3, 120)
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait()
            killed_at = time.time()
            del peer.procs["victim"]
            peer.start("replacement", "prefork", 2)
            peer.wait_ready()
            done = peer.wait_done(["peer-kill-user"], timeout=VISIBILITY_S * 4 + 60)
            stored = set(peer.redis.smembers(key))
            calls = [c for c in github_calls(stack, account["token"]) if c["kind"] == "page"]
            expected = truth(stack, account["id"])
        finally:
            peer.stop()
    return _kill_figures(expected, stored, calls, sent, killed_at, done.get("peer-kill-user"))


def killed_mid_whale_netsync(bench_api) -> dict:
    account = {"provider": "github", "id": "ns-kill", "size": KILL_SIZE, "token": "tok-ns-kill"}
    stack = DevStack(
        var_dir=temp_var_dir("netsync-bench-kill-"),
        workers=[WorkerSpec("normal,whale", pool="prefork", concurrency=2, name="victim")],
        scenario={"latency_ms": KILL_LATENCY_MS, "accounts": [account]},
        env={
            "BROKER_VISIBILITY_TIMEOUT": str(VISIBILITY_S),
            "QUOTA_GITHUB": GENEROUS_QUOTA,
            "LOG_LEVEL": "WARNING",
        },
    )
    with stack:
        sent = time.time()
        sync_id = bench_api.login(stack, "ns-kill-user", account)
        _wait(
            lambda: (
                int(bench_api.sync(stack, sync_id).get("connections_fetched") or 0)
                >= KILL_SIZE // 3
            ),
            120,
        )
        victim = stack.processes.pop("victim")
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
        killed_at = time.time()
        stack.start_worker(
            WorkerSpec("normal,whale", pool="prefork", concurrency=2, name="replacement")
        )
        record = bench_api.wait_final(stack, sync_id, timeout=VISIBILITY_S * 4 + 60)
        stored = set(bench_api.network_ids(stack, "ns-kill-user", "github"))
        calls = [c for c in github_calls(stack, account["token"]) if c["kind"] == "page"]
        expected = truth(stack, account["id"])
    finished = bench_api.epoch(record["finished_at"]) if record.get("finished_at") else None
    out = _kill_figures(expected, stored, calls, sent, killed_at, finished)
    out["status"] = record["status"]
    return out


def _kill_figures(expected, stored, calls, sent, killed_at, finished) -> dict:
    pages = calls  # the call log keeps no query string: pages again = calls - pages needed
    return {
        "size": len(expected),
        "stored": len(stored),
        "lost": len(expected - stored),
        "extra": len(stored - expected),
        "page_calls": len(pages),
        "pages_needed": -(-len(expected) // 100),
        "pages_fetched_again": max(0, len(pages) - -(-len(expected) // 100)),
        "complete": finished is not None and not (expected - stored),
        "seconds_to_complete_after_kill": round(finished - killed_at, 1) if finished else None,
        "seconds_total": round(finished - sent, 1) if finished else None,
        "visibility_timeout_s": VISIBILITY_S,
    }


def _wait(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.02)


def main(quick: bool = False, quota_case=None, iso_scenario=None, kill: bool = True) -> dict:
    from bench import api as bench_api
    from bench import isolation, quota

    case = quota_case or quota.Case(size=20_000 if quick else 50_000)
    print(f"peer benchmark: whale under a published {case.name} ...", flush=True)
    whale = whale_under_limit(case)
    print(
        f"  peer: sync {whale['seconds']} s (ratio {whale['ratio']}), {whale['http_429']} x 429",
        flush=True,
    )
    scenario = iso_scenario or isolation.plan(
        isolation.SEED, 60 if quick else 120, 18.0 if quick else 36.0
    )
    print(
        f"peer benchmark: {len(scenario['normals'])} normal logins beside "
        f"{len(scenario['whales'])} whales, one queue ...",
        flush=True,
    )
    beside = beside_whales(
        scenario,
        isolation.LATENCY_MS,
        isolation.NORMAL_SLOTS,
        isolation.WHALE_SLOTS,
        isolation.POOL,
        isolation.WHALE_LEAD_S,
    )
    print(
        f"  peer: normal p50 {beside['p50_s']} s, p99 {beside['p99_s']} s "
        f"({beside['unfinished']} unfinished)",
        flush=True,
    )
    out = {"whale_under_limit": whale, "beside_whales": beside}
    if not kill:
        return out
    print(
        f"peer benchmark: worker killed mid-whale ({KILL_SIZE:,}), netsync and peer ...", flush=True
    )
    # both wait out the broker's visibility timeout and kombu's restore sweep: in parallel
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        peer_future = pool.submit(killed_mid_whale_peer)
        netsync_future = pool.submit(killed_mid_whale_netsync, bench_api)
        kill_peer, kill_netsync = peer_future.result(), netsync_future.result()
    for name, k in (("peer", kill_peer), ("netsync", kill_netsync)):
        print(
            f"  {name}: lost {k['lost']}, extra {k['extra']}, pages fetched again "
            f"{k['pages_fetched_again']}, complete {k['complete']} "
            f"({k['seconds_to_complete_after_kill']} s after the kill)",
            flush=True,
        )
    out["killed_mid_whale"] = {"peer": kill_peer, "netsync": kill_netsync}
    return out
