"""Compiled trees, the parts that need no compiler: settings, and running without lleaves
(these run whether or not lleaves is installed; tests/models/compiled/test_compiler.py needs it)."""

from __future__ import annotations

import logging

import pytest

from shared.errors import SettingsError
from shared.models.compiled import compiler
from shared.settings import Settings


def test_compiled_settings_default_off_and_are_validated():
    settings = Settings.from_env({})
    assert settings.compiled_models == () and settings.compiled_cache_dir == ""
    assert compiler.make_compiler(settings, None) is None
    parsed = Settings.from_env({"COMPILED_MODELS": " churn , churn/*,seg?ent ",
                                "COMPILED_CACHE_DIR": "/var/cache/scorefn",
                                "COMPILED_TIMEOUT_SECONDS": "120"})
    assert parsed.compiled_models == ("churn", "churn/*", "seg?ent")
    assert (parsed.compiled_cache_dir, parsed.compiled_timeout_seconds) == ("/var/cache/scorefn", 120)
    for env in ({"COMPILED_MODELS": "a,,b"}, {"COMPILED_MODELS": "a b"},
                {"COMPILED_CACHE_DIR": "relative/dir"}, {"COMPILED_TIMEOUT_SECONDS": "1"}):
        with pytest.raises(SettingsError) as err:
            Settings.from_env(env)
        assert next(iter(env)) in str(err.value)


def test_lleaves_missing_logs_one_warning_and_keeps_lightgbm(monkeypatch, caplog):
    monkeypatch.setattr(compiler, "available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="scorefn.compiled"):
        assert compiler.make_compiler(Settings.from_env({"COMPILED_MODELS": "*"}), None) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "requirements-compiled.txt" in warnings[0].getMessage()
