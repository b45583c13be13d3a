"""``python -m scorefn``: the user-facing command line (see ``--help``)."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each command lives in scorefn/commands/<module>.py and defines register(subparsers).
COMMANDS = ("models", "compile", "latency", "router", "rollout", "demo_cmd", "jobs", "report",
            "monitor")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scorefn",
        description="scorefn: LightGBM scoring on Azure Functions. Commands talk to the storage "
                    "account named by --connection-string, or by --account-url with your Entra ID "
                    "login (az login), or else to the storage the app uses for that data, named "
                    "by its settings in this shell's environment: MODEL_STORAGE_CONNECTION (models, "
                    "router config), PREDICTION_LOG_CONNECTION (the A/B report), "
                    "AzureWebJobsStorage (batch jobs).")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"scorefn.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"scorefn.commands.{name}":
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    from shared.errors import SettingsError

    try:
        return int(args.run(args) or 0)
    except SettingsError as exc:  # an app setting in this shell is invalid: say which, briefly
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
