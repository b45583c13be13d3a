"""``demo``: the end-to-end demo behind ``make demo``."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    demo = subparsers.add_parser(
        "demo", help="run the local end-to-end demo (Azurite + local Functions host)",
        description="Start Azurite and the local Functions host on free 127.0.0.1 ports, train and "
                    "upload the demo models, score over HTTP and the queue, print predictions and "
                    "latency percentiles, then stop everything it started.")
    demo.add_argument("--requests", type=int, default=2000,
                      help="single-row requests for the latency percentiles (default 2000)")
    demo.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from scorefn.demo.run import run_demo

    return run_demo(requests=args.requests)
