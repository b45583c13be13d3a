"""The README documents every app setting the settings module reads."""

from pathlib import Path

from shared.settings import SPEC

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_app_setting_is_documented_in_the_readme():
    missing = [spec.env for spec in SPEC.values() if f"`{spec.env}`" not in README]
    assert missing == []


def test_every_telemetry_setting_is_documented_in_the_readme():
    from shared.settings import TELEMETRY_SPEC

    assert [name for name in TELEMETRY_SPEC if f"`{name}`" not in README] == []
