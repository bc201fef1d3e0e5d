"""queues.py and the queue/priority part of the Celery config: routing rules,
priorities in each broker's convention, region prefixes, and the Procfile.

The brokers' delivery order itself is checked with real workers in
tests/integration/test_queues.py; here, that kombu's Redis transport files a
message under the list we expect and asks Redis for the lists in the order
we rely on (lowest priority number first).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest

import queues
from service.celery_app import celery_config
from service.config import load_settings

ROOT = Path(__file__).resolve().parents[2]
THRESHOLD = 10_000


# -- classification ---------------------------------------------------------------
@pytest.mark.parametrize(
    "size, trigger, expected",
    [
        (0, "webhook", "normal"),
        (50, "webhook", "normal"),
        (THRESHOLD, "webhook", "normal"),  # at the threshold: still ordinary
        (THRESHOLD + 1, "webhook", "whale"),
        (2_000_000, "api", "whale"),
        (None, "webhook", "normal"),  # unknown size: normal until paging says otherwise
        (None, "cli", "normal"),
        (300, "stale", "trickle"),
        (None, "stale", "trickle"),
        (THRESHOLD + 1, "stale", "whale"),  # a stale whale refresh runs with the whales
    ],
)
def test_queue_class_for(size, trigger, expected):
    assert queues.queue_class_for(size, trigger, THRESHOLD) == expected


@pytest.mark.parametrize(
    "current, fetched, expected",
    [
        ("normal", 0, "normal"),
        ("normal", THRESHOLD, "normal"),
        ("normal", THRESHOLD + 1, "whale"),
        ("trickle", THRESHOLD + 1, "trickle"),  # background work keeps its bounded share
        ("whale", 0, "whale"),  # never back down within a sync
    ],
)
def test_reclassified_moves_a_sync_that_turns_out_large_to_whale(current, fetched, expected):
    assert queues.reclassified(current, fetched, THRESHOLD) == expected


def test_every_class_is_a_queue_class():
    for size, trigger in [(1, "webhook"), (THRESHOLD * 2, "webhook"), (1, "stale")]:
        assert queues.queue_class_for(size, trigger, THRESHOLD) in queues.QUEUE_CLASSES
    assert set(queues.INTERACTIVE_TRIGGERS) | set(queues.BULK_TRIGGERS) == {
        "webhook",
        "api",
        "cli",
        "stale",
    }


# -- regions ------------------------------------------------------------------------
def test_queue_name_is_plain_without_a_region():
    assert queues.queue_name("normal", "github", {}) == "normal"
    assert queues.queue_name("whale", "github", {"facebook": "eu"}) == "whale"


def test_queue_name_is_prefixed_by_the_providers_region():
    regions = {"facebook": "eu", "github": "us"}
    assert queues.queue_name("normal", "facebook", regions) == "eu.normal"
    assert queues.queue_name("trickle", "github", regions) == "us.trickle"
    assert queues.queue_name("whale", "mastodon", regions) == "whale"


def test_regions_come_from_provider_regions():
    settings = load_settings({"PROVIDER_REGIONS": "facebook:eu,github:eu,twitter:us"})
    assert settings.provider_regions == {"facebook": "eu", "github": "eu", "twitter": "us"}
    assert queues.all_queue_names(settings.provider_regions) == [
        "normal",
        "whale",
        "trickle",
        "eu.normal",
        "eu.whale",
        "eu.trickle",
        "us.normal",
        "us.whale",
        "us.trickle",
    ]


def test_declared_queues_carry_x_max_priority_and_their_own_routing_key():
    declared = queues.declare_queues({"github": "eu"})
    assert [q.name for q in declared] == queues.all_queue_names({"github": "eu"})
    for queue in declared:
        assert queue.queue_arguments == {"x-max-priority": queues.MAX_PRIORITY}
        assert queue.routing_key == queue.name
        assert queue.exchange.name == "netsync" and queue.exchange.type == "direct"


# -- priorities ----------------------------------------------------------------------
REDIS_URLS = [
    "redis://localhost:6379/0",
    "rediss://h:6380/0",
    "redis+socket:///tmp/r.sock",
    "sentinel://h:26379",
]


@pytest.mark.parametrize("url", REDIS_URLS)
def test_on_redis_interactive_work_gets_the_lower_number(url):
    interactive = {queues.priority_for(t, url) for t in queues.INTERACTIVE_TRIGGERS}
    bulk = queues.priority_for("stale", url)
    assert interactive == {0}
    assert bulk == queues.MAX_PRIORITY - queues.PRIORITY_BULK == 8
    assert queues.default_priority(url) == 0


@pytest.mark.parametrize(
    "url", ["amqp://guest:guest@localhost:5672//", "pyamqp://h//", "amqps://h//"]
)
def test_on_rabbitmq_interactive_work_gets_the_higher_number(url):
    assert {queues.priority_for(t, url) for t in queues.INTERACTIVE_TRIGGERS} == {9}
    assert queues.priority_for("stale", url) == 1
    assert queues.default_priority(url) == 9


def test_priorities_fit_the_declared_range():
    for url in REDIS_URLS[:1] + ["amqp://h//"]:
        for trigger in ("webhook", "api", "cli", "stale"):
            assert 0 <= queues.priority_for(trigger, url) <= queues.MAX_PRIORITY


def _redis_channel_stub():
    """Enough of kombu's Redis Channel to run its key-naming methods, with our options."""
    from kombu.transport.redis import Channel

    options = celery_config(load_settings({}), "redis://localhost:6379/0")[
        "broker_transport_options"
    ]
    stub = SimpleNamespace(
        priority_steps=options["priority_steps"],
        sep=options["sep"],
        global_keyprefix="",
        brpop_timeout=1,
        active_queues=["normal", "trickle"],
    )
    stub.priority = lambda n: Channel.priority(stub, n)
    stub._q_for_pri = lambda queue, pri: Channel._q_for_pri(stub, queue, pri)
    return Channel, stub


def test_kombu_redis_files_each_priority_under_its_own_list():
    Channel, stub = _redis_channel_stub()
    url = "redis://localhost:6379/0"
    assert stub._q_for_pri("normal", queues.priority_for("webhook", url)) == "normal"
    assert stub._q_for_pri("normal", queues.priority_for("stale", url)) == "normal:8"
    # every step is its own list: no two priorities share one
    assert len({stub._q_for_pri("normal", p) for p in range(10)}) == 10


def test_kombu_redis_pops_the_lowest_priority_number_first():
    """BRPOP takes from the first non-empty key it is given: kombu lists step 0 first."""
    from kombu.utils.scheduling import cycle_by_name

    Channel, stub = _redis_channel_stub()
    sent = []
    stub._queue_cycle = cycle_by_name("priority")()
    stub._queue_cycle.update(stub.active_queues)
    stub.client = SimpleNamespace(
        connection=SimpleNamespace(send_command=lambda *args: sent.append(args))
    )
    Channel._brpop_start(stub, timeout=1)
    (command,) = sent
    assert command[0] == "BRPOP"
    keys = list(command[1:-1])
    assert keys[:4] == ["normal", "trickle", "normal:1", "trickle:1"]
    assert keys.index("normal") < keys.index("normal:8")
    # across queues, priority still wins: trickle's urgent list before normal's bulk one
    assert keys.index("trickle") < keys.index("normal:8")


# -- the Celery config ----------------------------------------------------------------
def test_celery_config_on_redis():
    settings = load_settings({"PROVIDER_REGIONS": "github:eu"})
    conf = celery_config(settings, "redis://localhost:6379/0")
    options = conf["broker_transport_options"]
    assert options["priority_steps"] == list(range(10))
    assert options["queue_order_strategy"] == "priority"
    assert [q.name for q in conf["task_queues"]] == queues.all_queue_names({"github": "eu"})
    assert conf["task_default_queue"] == "normal"
    assert conf["task_default_priority"] == 0
    assert conf["task_queue_max_priority"] == queues.MAX_PRIORITY
    assert conf["worker_prefetch_multiplier"] == 1 and conf["task_acks_late"] is True
    # a threads worker's running tasks cannot be cancelled on a reconnect: no lowered prefetch
    assert conf["worker_enable_prefetch_count_reduction"] is False


def test_celery_config_on_rabbitmq():
    settings = load_settings({"CELERY_BROKER_URL": "amqp://guest:guest@localhost:5672//"})
    conf = celery_config(settings, "redis://localhost:6379/0")
    assert conf["broker_url"].startswith("amqp://")
    assert conf["task_default_priority"] == 9
    assert all(q.queue_arguments["x-max-priority"] == 9 for q in conf["task_queues"])


# -- Procfile ---------------------------------------------------------------------------
def _procfile() -> dict[str, list[str]]:
    lines = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_-]+):\s*(.+)$", line)  # honcho's (and Heroku's) rule
        if match:
            lines[match.group(1)] = shlex.split(match.group(2))
    return lines


def _option(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_procfile_has_one_worker_per_queue_with_pool_and_concurrency():
    procs = _procfile()
    workers = {name: argv for name, argv in procs.items() if "worker" in argv}
    consumed = sorted(_option(argv, "-Q") for argv in workers.values())
    assert consumed == sorted(queues.QUEUE_CLASSES)  # each queue once, each worker one queue
    for name, argv in workers.items():
        queue = _option(argv, "-Q")
        assert name == f"worker_{queue}"
        assert _option(argv, "-P") in ("prefork", "threads", "gevent", "eventlet", "solo")
        assert int(_option(argv, "-c")) >= 1
        # unique per process (the shell's pid, celery's own after exec, and a random part)
        assert argv[0] == "exec"
        assert _option(argv, "-n").startswith(f"{queue}-$$-")
        assert "service.make_celery" in argv
    assert "scheduler" in procs and "web" in procs
    assert not any("beat" in argv for argv in procs.values())  # cron, not Celery beat


def test_procfile_worker_node_names_differ_per_process_on_one_host():
    """What the shell makes of a worker line's ``-n``: ``<queue>-<pid>-<6 hex>@%h``, the pid
    the process's own; two processes of one line on one host never share a name."""
    import subprocess

    from celery.bin.worker import HOSTNAME
    from celery.utils.nodenames import gethostname

    for role in ("worker_normal", "worker_whale", "worker_trickle"):
        line = next(x for x in (ROOT / "Procfile").read_text().splitlines() if x.startswith(role))
        raw = re.search(r' -n ("[^"]+")', line).group(1)
        queue = role.split("_")[1]
        names = []
        for _ in range(2):
            # exec, as the Procfile line does: $$ is then the pid of what it runs
            shell = subprocess.Popen(
                ["sh", "-c", f"exec echo {raw}"], stdout=subprocess.PIPE, text=True
            )
            name = shell.communicate()[0].strip()
            match = re.fullmatch(rf"{queue}-([0-9]+)-[0-9a-f]{{6}}@%h", name)
            assert match and int(match.group(1)) == shell.pid, (name, shell.pid)
            names.append(name)
        assert names[0] != names[1], names
        # and Celery expands the host part as ever
        assert HOSTNAME.convert(names[0], None, None) == names[0][:-2] + gethostname()
