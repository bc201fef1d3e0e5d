"""The operations stack: the whole service with a callback receiver and small live caps.

Its own stack (not the session's) because callbacks, the live-connection cap
and Sentry are settings read at process start. Database 12 on a shared
Redis; an embedded one otherwise.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from devtools.devstack import ROOT, DevStack, WorkerSpec
from tests.integration.conftest import TEST_ENV, Stack
from tests.integration.receiver import CallbackReceiver, SentryReceiver

OPS_DB = 12
#: held live connections per web process in the ops stack (small, to test the cap)
LIVE_CAP = 3


class OpsStack(Stack):
    def __init__(self, dev: DevStack, receiver: CallbackReceiver, sentry: SentryReceiver):
        super().__init__(dev)
        self.receiver = receiver
        self.sentry = sentry

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """``flask --app service …`` as an operator runs it, against this stack."""
        done = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "service", *args],
            cwd=ROOT,
            env=self.dev.base_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check:
            assert done.returncode == 0, (done.stdout, done.stderr)
        return done

    def redis(self):
        import redis

        return redis.Redis.from_url(self.dev.redis_url)

    def _switch_services(self):
        from types import SimpleNamespace

        from state.control import ProviderSwitches
        from state.delayed import DelayedSet

        client = self.redis()
        return SimpleNamespace(
            switches=ProviderSwitches(client, "netsync"), delayed=DelayedSet(client, "netsync")
        )

    def pause(self, provider: str) -> None:
        """What `providers pause` does, without a CLI process (those are tested on their own)."""
        from service.operations import pause_provider

        pause_provider(self._switch_services(), provider)
        self.pause_reached_workers()

    @staticmethod
    def pause_reached_workers() -> None:
        """Wait out the documented bound for a pause to reach every worker's cache."""
        import time

        from state.control import PAUSE_PROPAGATION_S

        time.sleep(PAUSE_PROPAGATION_S)

    def resume(self, provider: str) -> None:
        from service.operations import resume_provider

        resume_provider(self._switch_services(), provider)


@pytest.fixture(scope="session")
def callback_receiver():
    with CallbackReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="session")
def sentry_receiver():
    with SentryReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="session")
def ops_stack(tmp_path_factory, callback_receiver, sentry_receiver):
    env = {
        **TEST_ENV,
        "CALLBACK_URL": callback_receiver.url,
        "CALLBACK_BACKOFF_BASE_SECONDS": "0.2",
        "CALLBACK_BACKOFF_CAP_SECONDS": "1",
        "CALLBACK_MAX_ATTEMPTS": "4",
        "LIVE_MAX_CONNECTIONS": str(LIVE_CAP),
    }
    env["SENTRY_DSN"] = sentry_receiver.dsn
    dev = DevStack(
        var_dir=tmp_path_factory.mktemp("ops-stack"),
        workers=[WorkerSpec("normal,whale,trickle", pool="prefork", concurrency=3, name="ops")],
        env=env,
        redis_db=OPS_DB,
    )
    with dev:
        yield OpsStack(dev, callback_receiver, sentry_receiver)
