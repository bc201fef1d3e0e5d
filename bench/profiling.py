"""Where a process's time goes: py-spy samples it while a benchmark runs.

A ``Recorder`` starts a process under ``py-spy record --format raw`` (with
its children: a prefork worker's pool processes; one collapsed stack per
line with its sample count); once the process is stopped,
``profile.summary()`` gives the share of samples per cost bucket
(``BUCKETS``: decoding JSON, Redis, publishing, the HTTP client, ...) and
the functions with the most samples of their own. The largest bucket is the
figure's "largest remaining cost". Idle threads are not sampled (py-spy's
default), so the shares are of CPU-busy time. Where py-spy is missing the
summary says so instead of a figure.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

#: (bucket, substrings of a frame's "function (file:line)"), in priority order: a
#: stack goes to the first bucket any of its frames matches (a publish's Redis
#: round trip counts as publishing; netsync's own code and Celery's machinery,
#: under which every task runs, only get what no library claimed)
BUCKETS = [
    ("start-up (imports)", ("importlib", "<frozen zipimport>")),
    ("publishing (kombu producer)", ("(kombu/messaging.py", "(amqp/")),
    ("json (de)serialization", ("(json/", "orjson", "(kombu/utils/json", "cjson")),
    (
        "HTTP client (requests/urllib3)",
        ("(requests/", "(urllib3/", "(http/client.py", "(requests_oauthlib/", "(oauthlib/"),
    ),
    ("redis client (round trips)", ("(redis/", "hiredis")),
    ("crypto (Fernet/HMAC)", ("(cryptography/", "(hmac.py", "(hashlib")),
    ("logging", ("(logging/",)),
    ("broker consumer (kombu)", ("(kombu/",)),
    ("flask/werkzeug/gunicorn", ("(flask/", "(werkzeug/", "(gunicorn/")),
    ("netsync: provider parsing", ("(providers/",)),
    ("netsync: state and engine", ("(state/", "(sync/", "(queues.py")),
    ("netsync: web app", ("(service/",)),
    ("celery worker machinery", ("(celery/", "(billiard/", "(vine/")),
    ("sockets and select", ("(socket.py", "(selectors.py", "(ssl.py")),
]
#: a stack whose frames come from one of these as a whole is waiting, not working
IDLE_LEAVES = (
    "select (selectors",
    "poll (selectors",
    "_recv",
    "recv_into",
    "wait (threading",
    "accept (socket",
    "sleep",
)


def pyspy() -> str | None:
    found = shutil.which("py-spy")
    if found:
        return found
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else None


class Profile:
    def __init__(self, raw_path: Path, note: str = ""):
        self.raw_path = raw_path
        self.note = note

    def stacks(self) -> list[tuple[list[str], int]]:
        if not self.raw_path.exists():
            return []
        out = []
        for line in self.raw_path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                out.append((stack.split(";"), int(count)))
        return out

    def summary(self, top: int = 8) -> dict:
        stacks = self.stacks()
        if not stacks:
            return {"samples": 0, "note": self.note or "no samples (py-spy missing or not allowed)"}
        buckets: collections.Counter = collections.Counter()
        leaves: collections.Counter = collections.Counter()
        total = 0
        skipped: collections.Counter = collections.Counter()
        for frames, count in stacks:
            frames = [
                f for f in frames if not f.startswith("process ") and not f.startswith("thread ")
            ]
            if not frames:
                continue
            bucket = bucket_of(frames)
            if bucket in ("start-up (imports)", "waiting (idle)"):
                skipped[bucket] += count  # not the work measured
                continue
            total += count
            leaves[frames[-1]] += count
            buckets[bucket] += count
        shares = {name: round(n / max(total, 1), 3) for name, n in buckets.most_common()}
        if not total:
            return {"samples": 0, "note": "only start-up or idle samples"}
        largest = next((name for name in shares if name != "other"), next(iter(shares)))
        return {
            "samples": total,
            "skipped_samples": dict(skipped),
            "buckets": shares,
            "largest_cost": largest,
            "largest_cost_share": shares[largest],
            "top_functions": [
                {"function": f, "share": round(n / total, 3)} for f, n in leaves.most_common(top)
            ],
        }


def bucket_of(frames: list[str]) -> str:
    if any(mark in frames[-1] for mark in IDLE_LEAVES):
        return "waiting (idle)"
    for name, marks in BUCKETS:
        if any(mark in frame for frame in frames for mark in marks):
            return name
    return "other"


class Recorder:
    """Runs a command under ``py-spy record --format raw`` (attaching to a running
    process is refused in some containers; a child of py-spy can always be sampled).

    ``wrap(cmd)`` is the command to start instead; ``stop(proc)`` ends the sampled
    process with SIGTERM (so py-spy, its parent, writes its output) and waits.
    """

    def __init__(self, name: str, subprocesses: bool = True, rate: int = 200):
        self.subprocesses, self.rate = subprocesses, rate
        self.raw = Path(tempfile.mkstemp(prefix=f"netsync-pyspy-{name}-", suffix=".txt")[1])
        self.profile = Profile(self.raw)
        self.exe = pyspy()
        if self.exe is None:
            self.profile.note = "py-spy not installed (pip install -r requirements-dev.txt)"

    def wrap(self, cmd: list[str]) -> list[str]:
        if self.exe is None:
            return list(cmd)
        prefix = [
            self.exe,
            "record",
            "--format",
            "raw",
            "--rate",
            str(self.rate),
            "--output",
            str(self.raw),
            "--nonblocking",
        ]
        if self.subprocesses:
            prefix.append("--subprocesses")
        return prefix + ["--"] + list(cmd)

    def stop(self, proc: subprocess.Popen, timeout: float = 30.0) -> Profile:
        if proc.poll() is None:
            children = _children(proc.pid) if self.exe else []
            for child in children or [proc.pid]:
                try:
                    os.kill(child, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        return self.profile


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def describe(summary: dict) -> str:
    """One line: the largest cost and its share, or why there is no profile."""
    if not summary.get("samples"):
        return summary.get("note", "no profile")
    top = summary["top_functions"][0]["function"] if summary.get("top_functions") else "?"
    return (
        f"{summary['largest_cost']} {summary['largest_cost_share']:.0%} of busy samples "
        f"(top function: {top})"
    )
