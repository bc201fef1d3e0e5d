"""service/config.py: defaults, parsing, and what production refuses."""

from __future__ import annotations

import pytest

from service.config import (
    DEV_API_TOKEN,
    DEV_ENCRYPTION_KEY,
    DEV_WEBHOOK_SECRET,
    PROVIDERS,
    REAL_API_URLS,
    ConfigError,
    load_settings,
)

PRODUCTION = {
    "NETSYNC_ENV": "production",
    "REDIS_URL": "redis://redis.internal:6379/0",
    "DATABASE_URL": "postgresql://netsync@db.internal:5432/netsync",
    "WEBHOOK_SECRETS": "whsec-new,whsec-old",
    "INTERNAL_API_TOKENS": "api-token-1",
    "TOKEN_ENCRYPTION_KEY": "cHJvZC1rZXktMzItYnl0ZXMtbG9uZy1mb3ItZmVybmV0IQ==",
}


def test_defaults_work_out_of_the_box():
    settings = load_settings({})
    assert settings.env == "development" and not settings.is_production
    assert settings.redis_url is None and settings.broker_url is None
    assert settings.key_prefix == "netsync"
    assert settings.webhook_secrets == (DEV_WEBHOOK_SECRET,)
    assert settings.api_tokens == (DEV_API_TOKEN,)
    assert settings.encryption_keys == (DEV_ENCRYPTION_KEY,)
    assert settings.callback_url is None and settings.sentry_dsn is None
    assert settings.whale_threshold == 10_000
    assert settings.freshness_seconds == 900
    assert settings.port == 8000
    assert settings.signature_tolerance == 300
    assert settings.delivery_ttl == 24 * 3600
    assert settings.provider_regions == {} and settings.oauth_clients == {}
    assert settings.api_urls == REAL_API_URLS


def test_empty_values_mean_the_default():
    settings = load_settings({"REDIS_URL": "", "WHALE_THRESHOLD": "", "WEBHOOK_SECRETS": " , "})
    assert settings.redis_url is None
    assert settings.whale_threshold == 10_000
    assert settings.webhook_secrets == (DEV_WEBHOOK_SECRET,)


def test_comma_separated_secrets_keep_their_order():
    settings = load_settings({"WEBHOOK_SECRETS": " new , old ,", "INTERNAL_API_TOKENS": "a,b"})
    assert settings.webhook_secrets == ("new", "old")  # the first signs
    assert settings.api_tokens == ("a", "b")


def test_values_are_read_from_the_environment():
    settings = load_settings(
        {
            "REDIS_URL": "redis://r:6379/2",
            "CELERY_BROKER_URL": "amqp://guest@mq//",
            "NETSYNC_KEY_PREFIX": "ns2",
            "WHALE_THRESHOLD": "500",
            "FRESHNESS_SECONDS": "60",
            "CALLBACK_URL": "http://app/cb",
            "SENTRY_DSN": "https://k@sentry.example/1",
            "GITHUB_API_URL": "http://127.0.0.1:8900/github/",
            "PORT": "9000",
            "GITHUB_OAUTH_CLIENT": "id:secret",
        }
    )
    assert settings.redis_url == "redis://r:6379/2"
    assert settings.broker_url == "amqp://guest@mq//"
    assert settings.key_prefix == "ns2"
    assert (settings.whale_threshold, settings.freshness_seconds, settings.port) == (500, 60, 9000)
    assert settings.callback_url == "http://app/cb"
    assert settings.sentry_dsn.startswith("https://")
    assert settings.api_url("github") == "http://127.0.0.1:8900/github"
    assert settings.api_url("twitter") == REAL_API_URLS["twitter"]
    assert settings.oauth_clients == {"github": "id:secret"}


def test_a_complete_production_environment_loads():
    settings = load_settings(PRODUCTION)
    assert settings.is_production
    assert settings.webhook_secrets == ("whsec-new", "whsec-old")


@pytest.mark.parametrize(
    "name, value",
    [
        ("WEBHOOK_SECRETS", DEV_WEBHOOK_SECRET),
        ("WEBHOOK_SECRETS", f"whsec-new,{DEV_WEBHOOK_SECRET}"),  # even as a verify-only secret
        ("INTERNAL_API_TOKENS", DEV_API_TOKEN),
        ("TOKEN_ENCRYPTION_KEY", DEV_ENCRYPTION_KEY),
    ],
)
def test_production_refuses_development_secrets(name, value):
    with pytest.raises(ConfigError, match=name):
        load_settings({**PRODUCTION, name: value})


@pytest.mark.parametrize(
    "name", ["WEBHOOK_SECRETS", "INTERNAL_API_TOKENS", "TOKEN_ENCRYPTION_KEY", "DATABASE_URL"]
)
def test_production_refuses_missing_secrets(name):
    environ = {key: value for key, value in PRODUCTION.items() if key != name}
    with pytest.raises(ConfigError, match=name):
        load_settings(environ)


def test_production_refuses_to_run_without_redis_url():
    environ = {key: value for key, value in PRODUCTION.items() if key != "REDIS_URL"}
    with pytest.raises(ConfigError, match="REDIS_URL"):
        load_settings(environ)


def test_production_lists_every_problem_at_once():
    with pytest.raises(ConfigError) as caught:
        load_settings({"NETSYNC_ENV": "production"})
    for name in ("WEBHOOK_SECRETS", "INTERNAL_API_TOKENS", "TOKEN_ENCRYPTION_KEY", "REDIS_URL"):
        assert name in str(caught.value)


def test_other_environments_accept_development_secrets():
    assert load_settings({"NETSYNC_ENV": "test"}).webhook_secrets == (DEV_WEBHOOK_SECRET,)


def test_provider_regions_are_parsed():
    settings = load_settings({"PROVIDER_REGIONS": "facebook:eu, twitter:us_east"})
    assert settings.provider_regions == {"facebook": "eu", "twitter": "us_east"}


@pytest.mark.parametrize(
    "raw",
    [
        "facebook",  # no region
        "facebook:",  # empty region
        "myspace:eu",  # unknown provider
        "facebook:eu-west",  # not an identifier (it becomes part of a queue name)
        "facebook:eu,github",
        ":eu",
    ],
)
def test_bad_provider_regions_are_refused(raw):
    with pytest.raises(ConfigError, match="PROVIDER_REGIONS"):
        load_settings({"PROVIDER_REGIONS": raw})


@pytest.mark.parametrize(
    "name",
    [
        "WHALE_THRESHOLD",
        "FRESHNESS_SECONDS",
        "PORT",
        "TASK_SOFT_TIME_LIMIT",
        "MAX_BACKOFF_ATTEMPTS",
    ],
)
@pytest.mark.parametrize("raw", ["ten", "1.5", "0x10"])
def test_bad_integers_are_refused_with_their_name(name, raw):
    with pytest.raises(ConfigError, match=name):
        load_settings({name: raw})


@pytest.mark.parametrize(
    "name",
    ["HTTP_CONNECT_TIMEOUT", "HTTP_READ_TIMEOUT", "BACKOFF_BASE_SECONDS", "BACKOFF_CAP_SECONDS"],
)
def test_bad_numbers_are_refused_with_their_name(name):
    with pytest.raises(ConfigError, match=name):
        load_settings({name: "soon"})


def test_http_timeouts_must_stay_below_the_soft_time_limit():
    with pytest.raises(ConfigError, match="TASK_SOFT_TIME_LIMIT"):
        load_settings({"HTTP_READ_TIMEOUT": "30", "TASK_SOFT_TIME_LIMIT": "30"})
    assert load_settings({"HTTP_READ_TIMEOUT": "20", "TASK_SOFT_TIME_LIMIT": "30"})


def test_every_provider_has_a_real_api_url():
    assert set(REAL_API_URLS) == set(PROVIDERS)


def test_production_refuses_a_visibility_timeout_shorter_than_a_task():
    with pytest.raises(ConfigError, match="BROKER_VISIBILITY_TIMEOUT"):
        load_settings({"NETSYNC_ENV": "production", "BROKER_VISIBILITY_TIMEOUT": "30"})
    assert load_settings({}).broker_visibility_timeout == 300


def test_redis_cluster_is_off_by_default_and_read_as_a_flag():
    assert load_settings({}).redis_cluster is False
    settings = load_settings(
        {
            "REDIS_CLUSTER": "1",
            "REDIS_URL": "redis://node-a:7000/0",
            "CELERY_BROKER_URL": "amqp://guest@mq//",
        }
    )
    assert settings.redis_cluster is True
    with pytest.raises(ConfigError, match="REDIS_CLUSTER"):
        load_settings({"REDIS_CLUSTER": "maybe"})


@pytest.mark.parametrize("broker", [None, "redis://node-a:7000/0", "rediss://node-a:7000/0"])
def test_redis_cluster_refuses_a_redis_broker(broker):
    env = {"REDIS_CLUSTER": "1", "REDIS_URL": "redis://node-a:7000/0"}
    if broker:
        env["CELERY_BROKER_URL"] = broker
    with pytest.raises(ConfigError, match="kombu's Redis transport cannot use a cluster"):
        load_settings(env)


def test_redis_cluster_needs_a_redis_url():
    with pytest.raises(ConfigError, match="REDIS_CLUSTER needs REDIS_URL"):
        load_settings({"REDIS_CLUSTER": "1", "CELERY_BROKER_URL": "amqp://guest@mq//"})


# -- spend: PRICE_<PROVIDER> and BUDGET_<PROVIDER> ----------------------------------------
def test_prices_default_to_the_provider_classes_and_there_is_no_budget():
    spend = load_settings({}).spend
    assert spend.price("twitter") == 0.010 and spend.price("github") == 0.0
    assert all(spend.budget(name) is None for name in PROVIDERS)


def test_price_and_budget_are_read_per_provider():
    spend = load_settings({"PRICE_TWITTER": "0.001", "BUDGET_TWITTER": "5.00/day"}).spend
    assert (spend.price("twitter"), spend.budget("twitter")) == (0.001, 5.0)


@pytest.mark.parametrize(
    "name, raw",
    [
        ("BUDGET_TWITTER", "5"),
        ("BUDGET_TWITTER", "5/week"),
        ("BUDGET_GITHUB", "-1/day"),
        ("PRICE_TWITTER", "one cent"),
        ("PRICE_TWITTER", "-0.01"),
        ("BUDGET_MYSPACE", "5/day"),
    ],
)
def test_a_malformed_spend_setting_stops_start_up_naming_its_variable(name, raw):
    with pytest.raises(ConfigError, match=name):
        load_settings({name: raw})
