"""The benchmark harness's own logic: reading wrk, bucketing profiles, rendering the report."""

from bench import profiling, report
from bench.ingest import parse_wrk
from sync.http import decode_body

WRK_OUTPUT = """Running 3s test @ http://127.0.0.1:8000
  2 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     9.10ms    3.20ms  41.00ms   80.00%
  Latency Distribution
     50%    8.50ms
     75%   10.10ms
     90%   12.90ms
     99%   1.20s
  2400 requests in 3.00s, 500.00KB read
  Non-2xx or 3xx responses: 3
Requests/sec:    800.25
Transfer/sec:    166.00KB
"""


def test_wrk_output_is_read_with_units():
    figures = parse_wrk(WRK_OUTPUT)
    assert abs(figures["requests_per_s"] - 800.25) < 0.1
    assert figures["requests"] == 2400
    assert figures["latency_ms"] == {"p50": 8.5, "p75": 10.1, "p90": 12.9, "p99": 1200.0}
    assert figures["non_2xx"] == 3


def test_a_stack_goes_to_the_first_bucket_any_frame_claims(tmp_path):
    raw = tmp_path / "raw.txt"
    raw.write_text(
        'process 1:"celery";run (celery/app/trace.py:1);send_pages (sync/tasks.py:2);'
        "publish (kombu/messaging.py:3);send_packed_command (redis/connection.py:4) 30\n"
        'process 1:"celery";run (celery/app/trace.py:1);send (sync/http.py:5);'
        "loads (json/decoder.py:6) 50\n"
        'process 1:"celery";_find_and_load (<frozen importlib._bootstrap>:1) 900\n'
        'process 1:"celery";run (celery/app/trace.py:1);_page (sync/tasks.py:7) 20\n'
    )
    summary = profiling.Profile(raw).summary()
    # start-up imports are left out of the shares: they are not the work measured
    assert summary["samples"] == 100
    assert summary["buckets"] == {
        "json (de)serialization": 0.5,
        "publishing (kombu producer)": 0.3,
        "netsync: state and engine": 0.2,
    }
    assert summary["largest_cost"] == "json (de)serialization"


def test_a_missing_profile_says_why():
    profile = profiling.Profile(profiling.Path("/nonexistent"), note="py-spy not installed")
    assert profiling.describe(profile.summary()) == "py-spy not installed"


def test_report_renders_what_ran_and_names_what_failed():
    figures = {
        "quick": True,
        "benchmarks": {
            "memory": {
                "small": {"peak_rss_mib": 80.0, "connections": 10_000},
                "large": {"peak_rss_mib": 85.5, "connections": 1_000_000},
                "peak_rss_growth_mib": 5.5,
                "redis_bytes_per_connection": 187.1,
                "profile": {},
            },
            "chain": {"error": "Traceback ..."},
        },
    }
    text = report.markdown(figures)
    assert (
        "| 8 memory: page worker peak RSS | 80.0 MiB (10,000) vs 85.5 MiB (1,000,000): +5.5 MiB"
        in text
    )
    assert "| growth < 10 MB | yes |" in text
    assert "Failed in this run: chain" in text


def test_provider_bodies_decode_like_the_json_module():
    assert decode_body(b'{"users": [{"id": 1, "login": "a"}], "next": null}') == {
        "users": [{"id": 1, "login": "a"}],
        "next": None,
    }
    assert decode_body(b"") is None
    assert decode_body(b"<html>busy</html>") is None
    assert decode_body('{"name": "\u00e9"}'.encode("utf-16")) == {"name": "\u00e9"}
