"""The Procfile as honcho (``make run``) and a host run it.

- ``honcho start`` stops every role as soon as one exits: the optional
  ``flower`` role, without its credentials, must not exit.
- Two processes of one worker line on one host (so one host name) answer
  under two node names, each carrying its own pid.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

from devtools.devstack import ROOT, stop_process
from service.celery_app import celery_config
from service.config import load_settings
from state.embedded_redis import EmbeddedRedis

BIN = os.path.dirname(sys.executable)
#: how long a process may take to come up on a loaded machine (a bound, not a measurement)
PATIENCE_S = 120.0


def procfile_command(role: str) -> str:
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith(f"{role}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {role} role in the Procfile")


def environment(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "FLOWER_BASIC_AUTH"}
    env["PATH"] = BIN + os.pathsep + env.get("PATH", "")  # as make run
    return {**env, **extra}


def test_honcho_start_keeps_the_other_roles_when_flower_has_no_credentials(tmp_path):
    """A probe role runs until the test tells it to finish, which it does only after flower
    said it would not start: honcho's exit code is the first role to end's, so 0 means
    the probe ended first and on its own (flower's old line exited 1 and stopped it)."""
    stop = tmp_path / "stop"
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import pathlib, sys, time\n"
        "stop = pathlib.Path(sys.argv[1])\n"
        "while not stop.exists():\n"
        "    time.sleep(0.05)\n"
        "print('probe done', flush=True)\n"
    )
    procfile = tmp_path / "Procfile"
    procfile.write_text(
        f"flower: {procfile_command('flower')}\nprobe: {sys.executable} {probe} {stop}\n"
    )
    honcho = subprocess.Popen(
        [os.path.join(BIN, "honcho"), "-f", str(procfile), "-d", str(ROOT), "start"],
        cwd=ROOT,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output = []
    try:
        for line in honcho.stdout:
            output.append(line)
            if "not started" in line:
                break
        assert any("FLOWER_BASIC_AUTH" in line for line in output), output
        stop.touch()
        output += honcho.stdout.readlines()
        honcho.wait(PATIENCE_S)
    finally:
        stop_process(honcho)
    assert any("probe done" in line for line in output), output
    assert honcho.returncode == 0, output


def test_two_workers_of_one_line_on_one_host_get_their_own_node_names(tmp_path, session_database):
    with EmbeddedRedis(tmp_path / "redis", persist=False) as server:
        env = environment(
            REDIS_URL=server.url,
            CELERY_BROKER_URL=server.url,
            DATABASE_URL=session_database,
            NETSYNC_VAR_DIR=str(tmp_path),
        )
        command = procfile_command("worker_normal")
        logs = [open(tmp_path / f"worker-{i}.log", "wb") for i in range(2)]  # noqa: SIM115 - closed below
        workers = [
            subprocess.Popen(
                ["sh", "-c", command],
                cwd=ROOT,
                env=env,
                start_new_session=True,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
            for log in logs
        ]
        from celery import Celery

        probe = Celery("node-names-probe")
        probe.conf.update(celery_config(load_settings(env), server.url))
        try:
            names: set[str] = set()
            deadline = time.monotonic() + PATIENCE_S
            while len(names) < 2 and time.monotonic() < deadline:
                assert all(w.poll() is None for w in workers), "a worker exited; see its log"
                names |= {node for reply in probe.control.ping(timeout=0.5) or [] for node in reply}
        finally:
            probe.close()
            for worker in workers:
                stop_process(worker)
            for log in logs:
                log.close()
    stems = sorted(name.split("@", 1)[0] for name in names)
    assert len(stems) == 2, names
    assert all(re.fullmatch(r"normal-[0-9]+-[0-9a-f]{6}", stem) for stem in stems), stems
    # each name carries its own process's pid (sh execs celery: $$ is celery's pid)
    assert {int(stem.split("-")[1]) for stem in stems} == {w.pid for w in workers}
