"""docs/settings.md is ``service.config.SETTINGS`` (``python -m devtools.settings_docs``),
and that one declaration is what ``Settings`` and ``load_settings`` are made of."""

from __future__ import annotations

import dataclasses

import pytest

from devtools.settings_docs import PAGE, rendered
from service.config import SETTINGS, ConfigError, Settings, load_settings


def test_the_settings_page_is_the_declaration():
    text = PAGE.read_text()
    assert rendered(text) == text, "run: python -m devtools.settings_docs"


def test_each_variable_and_each_field_is_declared_once():
    variables = [setting.var for setting in SETTINGS if setting.var]
    fields = [setting.field for setting in SETTINGS if setting.field]
    assert len(variables) == len(set(variables))
    assert len(fields) == len(set(fields))
    assert [f.name for f in dataclasses.fields(Settings)] == fields


def test_settings_defaults_are_the_declared_defaults():
    built, loaded = Settings(), load_settings({})
    for setting in SETTINGS:
        if setting.field:
            assert getattr(built, setting.field) == setting.default, setting.field
            assert getattr(loaded, setting.field) == setting.default, setting.field


def test_a_family_reads_one_variable_per_provider():
    (api_urls,) = [s for s in SETTINGS if s.field == "api_urls"]
    env = {var: f"http://127.0.0.1:8900/{var}" for var in api_urls.variables()}
    assert set(load_settings(env).api_urls.values()) == set(env.values())


@pytest.mark.parametrize(
    "var",
    [s.var for s in SETTINGS if s.var and s.parse.__name__ in ("_integer", "_number", "_flag")],
)
def test_every_value_that_does_not_parse_is_refused_with_its_name(var):
    with pytest.raises(ConfigError, match=var):
        load_settings({var: "soon"})


@pytest.mark.parametrize("var", ["QUOTA_GITHUB", "QUOTA_SHARES", "QUOTA_SHARES_GITHUB"])
def test_a_bad_quota_is_refused_with_its_name(var):
    with pytest.raises(ConfigError, match=f"^{var}: "):
        load_settings({"QUOTA_TWITTER": "15/900/token", var: "normal:2"})
