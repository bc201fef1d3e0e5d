"""``python -m simulator``: prints its address, serves, stops cleanly on SIGTERM/SIGINT."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]


def start(*args):
    return subprocess.Popen(
        [sys.executable, "-m", "simulator", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serves_the_scenario_on_a_free_port_and_stops_on_signal(tmp_path, signum):
    scenario = tmp_path / "scenario.json"
    scenario.write_text(
        json.dumps({"accounts": [{"provider": "github", "id": "octocat", "size": 3, "token": "t"}]})
    )
    process = start("--port", "0", "--scenario", str(scenario))
    try:
        line = process.stdout.readline().strip()
        assert line.startswith("simulator listening on http://127.0.0.1:")
        base = line.rsplit(" ", 1)[1]
        assert not base.endswith(":0")
        assert (
            len(
                requests.get(
                    f"{base}/github/users/octocat/followers", headers={"Authorization": "token t"}
                ).json()
            )
            == 3
        )
        process.send_signal(signum)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_invalid_scenario_exits_2(tmp_path):
    scenario = tmp_path / "bad.json"
    scenario.write_text(json.dumps({"accounts": [{"provider": "myspace", "id": "x"}]}))
    process = start("--port", "0", "--scenario", str(scenario))
    _, err = process.communicate(timeout=20)
    assert process.returncode == 2 and "myspace" in err
