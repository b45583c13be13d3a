"""The rollout audit log: one JSON line per evaluation of a rollout (time, step, share, the
figures, the guardrails, the always-valid interval, the action and its reason), appended to
``.rollouts/{endpoint}/audit.jsonl`` in the prediction log's container (an endpoint name never
starts with ``.``, so the prefix never mixes with an endpoint's log). ``rollout status`` and the
A/B report read it back; the report plots the share and the interval over time from it.
"""

from __future__ import annotations

from typing import Any

import orjson

from shared.ablog.blobs import AppendTarget
from shared.ablog.dataset import parse_lines
from shared.ablog.times import iso_time
from shared.rollout.config import Rollout
from shared.rollout.decide import Decision

PREFIX = ".rollouts"


def audit_prefix(endpoint: str) -> str:
    return f"{PREFIX}/{endpoint}"


def audit_line(endpoint: str, rollout: Rollout, decision: Decision, now: float, *,
               config_version: str | None) -> dict[str, Any]:
    """The audit record of one evaluation (``rollout`` as it was before the decision)."""
    state = rollout.state
    return {"time": iso_time(now), "endpoint": endpoint, "control": rollout.control,
            "candidate": rollout.candidate, "status": state.status, "step": state.step,
            "share": 0 if state.status == "pending" else rollout.share(state.step),
            "action": decision.action, "reason": decision.reason,
            "checks": [c.to_dict() for c in decision.checks], "verdict": decision.verdict,
            "interval": (None if decision.interval is None
                         else [_finite(x) for x in decision.interval]),
            "metric": rollout.decision.metric if rollout.decision else None,
            "figures": decision.figures, "config_version": config_version}


class AuditLog:
    """Appends audit lines to, and reads them from, a blob container (an
    ``azure.storage.blob.ContainerClient``)."""

    def __init__(self, container: Any) -> None:
        self.container = container
        self._target = AppendTarget(container, instance="audit")

    def append(self, endpoint: str, line: dict[str, Any]) -> None:
        self._target.append(audit_prefix(endpoint), orjson.dumps(line) + b"\n")

    def read(self, endpoint: str) -> list[dict[str, Any]]:
        """Every line of ``endpoint``'s audit log, oldest first (empty when there is none)."""
        from azure.core.exceptions import ResourceNotFoundError

        lines: list[dict[str, Any]] = []
        try:
            names = sorted(b.name for b in self.container.list_blobs(
                name_starts_with=audit_prefix(endpoint) + "/"))
            for name in names:
                lines += parse_lines(self.container.download_blob(name).readall())[0]
        except ResourceNotFoundError:
            return []
        return sorted(lines, key=lambda doc: str(doc.get("time", "")))


def _finite(x: float) -> float | None:
    return x if x == x and abs(x) != float("inf") else None
