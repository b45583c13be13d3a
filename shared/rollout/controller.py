"""The rollout controller: one run evaluates every active rollout of the router config and
writes the next config, all decisions at once, with a conditional write on the ETag it read.

- Two controllers racing (two instances, a retried timer): both read version E, one write with
  ``If-Match: E`` wins, the other gets 412 and changes nothing: one decision.
- A person who writes the config between the read and the write wins the same way; a person's
  edit of the weights seen at the next run pauses the rollout (:mod:`shared.rollout.decide`).
- A run that cannot read the config or the logs (storage down) raises before it writes
  anything: nothing changes, and the next timer run tries again.
- The decisions are appended to the audit log and counted in telemetry after the write
  succeeded (a ``hold`` changes nothing and is logged too: the report plots the interval from
  it), so the audit never shows a decision that did not take effect.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from shared.errors import InvalidRouterConfig, ScoreError
from shared.rollout.apply import apply_decision
from shared.rollout.audit import AuditLog, audit_line
from shared.rollout.config import Rollout
from shared.rollout.decide import Decision, decide
from shared.rollout.evidence import collect
from shared.router.config import MAX_CONFIG_BYTES, EndpointConfig, RouterConfig, parse_config

log = logging.getLogger("scorefn.rollout")


@dataclass(frozen=True)
class RolloutRun:
    """One rollout's evaluation in a run: its decision, and whether it took effect (``False``
    when another writer changed the config first, or on a dry run)."""

    endpoint: str
    rollout: Rollout
    decision: Decision
    applied: bool


@dataclass(frozen=True)
class StoredConfig:
    """The router config blob as read: its document, its version and the validated config."""

    document: dict[str, Any]
    etag: str
    config: RouterConfig


class RolloutController:
    """Runs the rollouts of the router config at ``config_blob`` (an
    ``azure.storage.blob.BlobClient``) on the prediction and outcome log containers.
    ``store`` (a :class:`~shared.models.store.ModelStore`) checks that each candidate's model
    loads; ``telemetry`` counts the decisions."""

    def __init__(self, config_blob: Any, *, predictions: Any, outcomes: Any, audit: AuditLog,
                 store: Any = None, telemetry: Any = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config_blob = config_blob
        self.predictions = predictions
        self.outcomes = outcomes
        self.audit = audit
        self.store = store
        self.telemetry = telemetry
        self.clock = clock

    def read(self) -> StoredConfig | None:
        """The stored config (``None`` when there is none). Raises
        :class:`InvalidRouterConfig` for one the app would refuse, and the storage SDK's
        errors when storage cannot be read."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            downloader = self.config_blob.download_blob()
        except ResourceNotFoundError:
            return None
        if downloader.size > MAX_CONFIG_BYTES:
            raise InvalidRouterConfig(f"the config is {downloader.size} bytes; the limit is "
                                      f"{MAX_CONFIG_BYTES}")
        data = downloader.readall()
        config = parse_config(data)
        return StoredConfig(orjson.loads(data), downloader.properties.etag, config)

    def run(self, *, dry_run: bool = False) -> list[RolloutRun]:
        """Evaluate every pending or running rollout and write the next config (unless
        ``dry_run``); see the module docstring."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError

        now = self.clock()
        try:
            stored = self.read()
        except InvalidRouterConfig as exc:
            log.warning("rollouts: the stored router config is invalid (%s); nothing to do "
                        "until it is fixed", exc.message)
            return []
        if stored is None:
            return []
        evaluated: list[tuple[str, Rollout, Decision]] = []
        document = stored.document
        for endpoint, ep in stored.config.endpoints.items():
            rollout = ep.rollout
            if rollout is None or rollout.state.status not in ("pending", "running"):
                continue
            decision = self.evaluate(endpoint, ep, rollout, now)
            evaluated.append((endpoint, rollout, decision))
            document = apply_decision(document, endpoint, rollout, decision, now)
        if not evaluated:
            return []
        if dry_run:
            return [RolloutRun(e, r, d, False) for e, r, d in evaluated]
        version = stored.etag
        if any(d.changes_config for _, _, d in evaluated):
            data = orjson.dumps(document, option=orjson.OPT_INDENT_2)
            parse_config(data)  # never write what the app would refuse
            try:
                result = self.config_blob.upload_blob(
                    data, overwrite=True, etag=stored.etag,
                    match_condition=MatchConditions.IfNotModified, **_json_settings())
            except ResourceModifiedError:
                log.info("rollouts: the router config changed while this run evaluated it; "
                         "nothing decided (the next run sees the new version)")
                return [RolloutRun(e, r, d, False) for e, r, d in evaluated]
            version = result.get("etag", version)
        runs = []
        for endpoint, rollout, decision in evaluated:
            self._record(endpoint, rollout, decision, now, version)
            runs.append(RolloutRun(endpoint, rollout, decision, True))
        return runs

    def evaluate(self, endpoint: str, ep: EndpointConfig, rollout: Rollout, now: float) -> Decision:
        """The decision for one rollout now (reads the logs; raises when storage cannot be read)."""
        weights = {v.name: float(v.weight) for v in ep.variants}
        if rollout.state.status == "pending":
            return decide(rollout, None, weights=weights, now=now)
        problem = self._candidate_problem(ep, rollout)
        evidence = None
        if problem is None:
            evidence = collect(rollout, endpoint, predictions=self.predictions,
                               outcomes=self.outcomes, now=now)
        return decide(rollout, evidence, weights=weights, now=now, candidate_problem=problem)

    def _candidate_problem(self, ep: EndpointConfig, rollout: Rollout) -> str | None:
        """Why the candidate's model cannot be loaded, or ``None``. Storage trouble is not the
        model's fault: it is raised, and the run retried."""
        if self.store is None:
            return None
        model = next(v.model for v in ep.variants if v.name == rollout.candidate)
        try:
            self.store.get(model)
        except ScoreError as exc:
            if not exc.permanent:
                raise
            return f"{exc.code}: {exc.message}"
        return None

    def _record(self, endpoint: str, rollout: Rollout, decision: Decision, now: float,
                version: str | None) -> None:
        level = logging.WARNING if decision.action in ("rollback", "pause") else logging.INFO
        log.log(level, "rollout of %s: %s (%s)", endpoint, decision.action, decision.reason)
        if self.telemetry is not None:
            self.telemetry.record_rollout_decision(endpoint, decision.action)
        try:
            self.audit.append(endpoint, audit_line(endpoint, rollout, decision, now,
                                                   config_version=version))
        except Exception:  # the decision stands; its audit line is what is lost
            log.exception("rollouts: could not append to the audit log of %s", endpoint)


def _json_settings() -> dict[str, Any]:
    from azure.storage.blob import ContentSettings

    return {"content_settings": ContentSettings(content_type="application/json")}
