"""Compiled trees, the parts that need no compiler: settings, and running without llvmlite or
lleaves (these run whether or not they are installed)."""

from __future__ import annotations

import logging

import pytest

from shared.app import compiled_trees
from shared.errors import SettingsError
from shared.models.compiled import compiler, target
from shared.settings import Settings
from shared.telemetry import get_telemetry


def test_compiled_trees_are_on_and_compiling_on_the_instance_is_off_by_default():
    settings = Settings.from_env({})
    assert settings.compiled_trees is True
    assert settings.compile_on_instance == () and settings.compiled_cache_dir == ""
    assert compiler.make_compiler(settings, None) is None
    parsed = Settings.from_env({"COMPILE_ON_INSTANCE": " churn , churn/*,seg?ent ",
                                "COMPILED_TREES": "false",
                                "COMPILED_CACHE_DIR": "/var/cache/scorefn",
                                "COMPILED_TIMEOUT_SECONDS": "120"})
    assert parsed.compile_on_instance == ("churn", "churn/*", "seg?ent")
    assert parsed.compiled_trees is False
    assert (parsed.compiled_cache_dir, parsed.compiled_timeout_seconds) == ("/var/cache/scorefn", 120)
    for env in ({"COMPILE_ON_INSTANCE": "a,,b"}, {"COMPILE_ON_INSTANCE": "a b"},
                {"COMPILED_TREES": "maybe"},
                {"COMPILED_CACHE_DIR": "relative/dir"}, {"COMPILED_TIMEOUT_SECONDS": "1"}):
        with pytest.raises(SettingsError) as err:
            Settings.from_env(env)
        assert next(iter(env)) in str(err.value)


def test_turned_off_nothing_is_loaded_or_compiled():
    off = Settings.from_env({"COMPILED_TREES": "false", "COMPILE_ON_INSTANCE": "*"})
    assert compiled_trees(off, None, get_telemetry()) == (None, None)


def test_llvmlite_missing_logs_one_warning_and_keeps_lightgbm(monkeypatch, caplog):
    monkeypatch.setattr(target, "can_load", lambda: False)
    with caplog.at_level(logging.WARNING):
        assert compiled_trees(Settings.from_env({}), None, get_telemetry()) == (None, None)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "llvmlite is not installed" in warnings[0].getMessage()


def test_lleaves_missing_keeps_the_on_instance_compiler_off(monkeypatch, caplog):
    monkeypatch.setattr(compiler, "can_compile", lambda: False)
    with caplog.at_level(logging.WARNING, logger="scorefn.compiled"):
        assert compiler.make_compiler(Settings.from_env({"COMPILE_ON_INSTANCE": "*"}), None) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "lleaves" in warnings[0].getMessage()
