"""Write docs/settings.md, the settings reference, from the declarations in shared/settings.py.

    python -m shared.settings_doc            # (re)write docs/settings.md   (make settings-doc)
    python -m shared.settings_doc --check    # exit 1 when docs/settings.md is stale

Nothing here is written by hand per setting: each row comes from a setting's declaration
(variable, default, what its parser accepts, meaning, group), the rules between settings from
``RULES``, and the settings of the hosts from ``HOST_SETTINGS``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from shared.settings import GROUPS, HOST_SETTINGS, RULES, SPEC, TELEMETRY_SPEC, MiB, Setting

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "settings.md"
COMMAND = "python -m shared.settings_doc"
MAKE_TARGET = "make settings-doc"

_INTRO = f"""\
# Settings reference

<!-- Written by `{COMMAND}` (`{MAKE_TARGET}`) from the declarations in shared/settings.py.
     Do not edit by hand: change the declaration and regenerate. -->

Every app setting scorefn reads is declared once, in `shared/settings.py`: its variable,
default, the values it accepts and its meaning. The code's typed settings, their validation and
this page all come from that declaration. In Azure they are app settings (`infra/` sets them);
for local runs they are the `Values` of `local.settings.json` (the Functions convention; copy
`local.settings.example.json`).

A setting that is unset or empty takes its default. An invalid value is refused when the
settings are first read (by the first request, job or command, not at import), with an error
naming the setting but never echoing its value.
"""

_CONNECTIONS = """\
## Storage connections

`MODEL_STORAGE_CONNECTION` and `PREDICTION_LOG_CONNECTION` name a storage connection, which
follows the Functions identity-based convention, so one style serves the triggers and the model
store. For a connection name `NAME` (default `AzureWebJobsStorage`):

- `NAME` = a connection string: local runs and Azurite;
- or `NAME__accountName` (or `NAME__blobServiceUri` / `NAME__queueServiceUri`; `NAME__serviceUri`
  is read as the blob service URI, as blob bindings name it): Entra ID via
  `DefaultAzureCredential`; `NAME__clientId` selects a user-assigned managed identity and
  `NAME__credential=managedidentity` forces managed identity. No account keys are needed or
  read by the code; the deployed app uses only this form.
"""


def env_text(value: Any) -> str:
    """``value`` written as the app setting that means it (``""`` for an empty default)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


def _default(setting: Setting) -> str:
    text = env_text(setting.default)
    if not text:
        return "(unset)" if setting.default is None else "(empty)"
    shown = f"`{text}`"
    if setting.env.endswith("_BYTES") and isinstance(setting.default, int) \
            and setting.default and setting.default % MiB == 0:
        shown += f" ({setting.default // MiB} MiB)"
    return shown


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _table(settings: Iterable[Setting]) -> list[str]:
    lines = ["| setting | default | allowed values | meaning |", "|---|---|---|---|"]
    lines += [f"| `{s.env}` | {_default(s)} | {_cell(s.allowed)} | {_cell(s.doc)} |"
              for s in settings]
    return lines


def render() -> str:
    """The text of docs/settings.md for the settings declared now."""
    declared = [*SPEC.values(), *TELEMETRY_SPEC.values()]
    unknown = sorted({s.group for s in declared} - set(GROUPS))
    if unknown:
        raise ValueError(f"settings declared in groups not in GROUPS: {unknown}")
    out = [_INTRO]
    for group in GROUPS:
        members = [s for s in declared if s.group == group]
        if members:
            out.append(f"## {group}\n")
            out.append("\n".join(_table(members)) + "\n")
    out.append("## Rules between settings\n")
    out.append("Checked after each setting is read alone; a broken rule is an invalid setting "
               "too.\n")
    out.append("\n".join(f"- {rule.doc}" for rule in RULES) + "\n")
    out.append(_CONNECTIONS)
    out.append("## Read by the hosts and the platform\n")
    out.append("Not declared in `shared/settings.py` (scorefn uses `AzureWebJobsStorage` only as "
               "a storage connection, above); listed so that every name in "
               "`local.settings.json` is accounted for.\n")
    lines = ["| setting | meaning |", "|---|---|"]
    lines += [f"| `{name}` | {_cell(doc)} |" for name, doc in HOST_SETTINGS.items()]
    out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 when docs/settings.md is not what would be "
                             "written")
    args = parser.parse_args(argv)
    text = render()
    current = DOC_PATH.read_text(encoding="utf-8") if DOC_PATH.exists() else None
    if args.check:
        if current != text:
            print(f"{DOC_PATH} is stale: run `{COMMAND}` (or `{MAKE_TARGET}`)", file=sys.stderr)
            return 1
        return 0
    if current != text:
        DOC_PATH.parent.mkdir(parents=True, exist_ok=True)
        DOC_PATH.write_text(text, encoding="utf-8")
        print(f"wrote {DOC_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
