"""Reading the prediction and outcome logs of an endpoint, and joining outcomes to predictions.

Blobs are listed by time prefix (``{endpoint}/{yyyy}/{mm}/{dd}/`` for whole days,
``.../{hh}/`` at the edges of the range), read in parallel with progress shown, and parsed
line by line (a damaged line is counted and skipped, never fatal).

**The join.** An outcome names a ``request_id`` or a sticky ``key``, optionally a ``row``
(0-based, for multi-row requests), and has a ``time`` (given by the caller, else when it
was received):

- by ``key``: the latest answering (non-shadow) prediction for that key at or before the
  outcome's time; none means unmatched (a label cannot be caused by a later prediction);
- by ``request_id``: that request's answering prediction (if the id was reused, the latest
  one at or before the outcome's time, else the earliest after it);
- without ``row``, the prediction must be of a single row (else *ambiguous*, not joined);
  with ``row``, the row must exist;
- several outcomes for the same prediction row: the one received last wins (a correction);
  outcomes from ``--outcomes-csv`` win over logged ones.

Shadow records carry the answering request's ``request_id``; they are paired with that
answer (the latest answering record with that id at or before the shadow's time) and
inherit its joined labels.
"""

from __future__ import annotations

import bisect
import csv
import math
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from shared.ablog.record import PREDICT, DamagedRecord, PredictionRecord

BINARY_OBJECTIVES = {"binary", "cross_entropy", "xentropy"}
MULTICLASS_OBJECTIVES = {"multiclass", "softmax", "multiclassova", "multiclass_ova", "ova", "ovr"}


def objective_family(objective: str | None) -> str:
    """``binary``, ``multiclass`` or ``regression`` for a LightGBM objective name."""
    name = (objective or "").strip().lower()
    if name in BINARY_OBJECTIVES:
        return "binary"
    if name in MULTICLASS_OBJECTIVES:
        return "multiclass"
    return "regression"


# -- time ranges and prefixes ---------------------------------------------------------------


def parse_when(text: str) -> datetime:
    """An ISO 8601 date or time (UTC when no zone is given)."""
    value = datetime.fromisoformat(text.strip())
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def time_prefixes(endpoint: str, since: datetime, until: datetime) -> list[str]:
    """Blob name prefixes covering the hours that overlap [since, until): a day prefix
    for every whole day, hour prefixes for the partial days at both ends."""
    start = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    end = until.astimezone(UTC)
    prefixes: list[str] = []
    if since >= until:
        return prefixes
    t = start
    while t < end:
        day_end = (t + timedelta(days=1)).replace(hour=0)
        if t.hour == 0 and day_end <= end:
            prefixes.append(f"{endpoint}/{t:%Y/%m/%d}/")
            t = day_end
        else:
            prefixes.append(f"{endpoint}/{t:%Y/%m/%d/%H}/")
            t += timedelta(hours=1)
    return prefixes


# -- progress ---------------------------------------------------------------------------------


class Progress:
    """A status line for long work: updated in place on a terminal, a line every few
    seconds otherwise. ``stream=None`` is silent."""

    def __init__(self, stream: Any = sys.stderr, every: float = 2.0) -> None:
        self.stream = stream
        self.tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())
        self.every = every
        self._last = 0.0
        self._width = 0
        self._lock = threading.Lock()

    def update(self, text: str, force: bool = False) -> None:
        if self.stream is None:
            return
        with self._lock:
            now = time.monotonic()
            if self.tty:
                if force or now - self._last >= 0.1:
                    self.stream.write("\r" + text.ljust(self._width))
                    self.stream.flush()
                    self._width = len(text)
                    self._last = now
            elif force or now - self._last >= self.every:
                self.stream.write(text + "\n")
                self.stream.flush()
                self._last = now

    def done(self, text: str) -> None:
        if self.stream is None:
            return
        with self._lock:
            if self.tty:
                self.stream.write("\r" + text.ljust(self._width) + "\n")
            else:
                self.stream.write(text + "\n")
            self.stream.flush()
            self._width = 0


# -- reading ----------------------------------------------------------------------------------


@dataclass
class ReadStats:
    blobs: int = 0
    bytes: int = 0
    records: int = 0
    bad_lines: int = 0


def read_log(container: Any, prefixes: Iterable[str], *, what: str, progress: Progress,
             workers: int = 4) -> tuple[list[dict[str, Any]], ReadStats]:
    """Every JSON record in the blobs under ``prefixes`` of ``container`` (an
    ``azure.storage.blob.ContainerClient``); a missing container reads as empty."""
    from azure.core.exceptions import ResourceNotFoundError

    stats = ReadStats()
    names: list[tuple[str, int]] = []
    prefixes = list(prefixes)
    try:
        for i, prefix in enumerate(prefixes):
            for blob in container.list_blobs(name_starts_with=prefix):
                names.append((blob.name, blob.size or 0))
            progress.update(f"{what}: listing {i + 1}/{len(prefixes)} time prefixes, "
                            f"{len(names):,} blobs found")
    except ResourceNotFoundError:
        progress.done(f"{what}: container {container.container_name!r} does not exist: nothing to read")
        return [], stats
    total = sum(size for _, size in names)
    records: list[dict[str, Any]] = []
    lock = threading.Lock()

    def fetch(name: str) -> bytes:
        try:
            return container.download_blob(name).readall()
        except ResourceNotFoundError:
            return b""

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for data in pool.map(fetch, [name for name, _ in names]):
            parsed, bad = parse_lines(data)
            with lock:
                records.extend(parsed)
                stats.blobs += 1
                stats.bytes += len(data)
                stats.records += len(parsed)
                stats.bad_lines += bad
            progress.update(f"{what}: {stats.blobs:,}/{len(names):,} blobs, "
                            f"{stats.bytes / 1e6:,.1f}/{total / 1e6:,.1f} MB, {stats.records:,} records")
    progress.done(f"{what}: {stats.records:,} records from {stats.blobs:,} blobs "
                  f"({stats.bytes / 1e6:,.1f} MB)" + (f", {stats.bad_lines} damaged lines skipped"
                                                      if stats.bad_lines else ""))
    return records, stats


def parse_lines(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """JSON objects of a JSON Lines blob, and how many lines were not (a torn last line of
    a blob being written, say)."""
    out: list[dict[str, Any]] = []
    bad = 0
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            bad += 1
            continue
        if isinstance(doc, dict):
            out.append(doc)
        else:
            bad += 1
    return out, bad


def read_outcomes_csv(path: Path, *, now: float | None = None) -> list[dict[str, Any]]:
    """Outcomes from a CSV file with a header: ``request_id`` or ``key`` (one per line),
    ``label``, optional ``time`` (ISO 8601) and ``row``. Raises ``ValueError`` naming the
    line of the first bad one."""
    from shared.ablog.outcomes import validate_outcome
    from shared.errors import InvalidOutcome

    now = time.time() if now is None else now
    out: list[dict[str, Any]] = []
    with path.open(newline="", encoding="utf-8-sig") as stream:
        reader = csv.DictReader(stream)
        fields = set(reader.fieldnames or ())
        if "label" not in fields or not fields & {"request_id", "key"}:
            raise ValueError(f"{path}: the header must name request_id or key, and label "
                             f"(optional: time, row)")
        for lineno, row in enumerate(reader, start=2):
            item: dict[str, Any] = {}
            for name in ("request_id", "key", "time"):
                value = (row.get(name) or "").strip()
                if value:
                    item[name] = value
            try:
                item["label"] = _number(row.get("label"))
                if (row.get("row") or "").strip():
                    item["row"] = int(row["row"])
                outcome = validate_outcome(item, f"line {lineno}", now)
            except (InvalidOutcome, ValueError) as exc:
                message = exc.message if isinstance(exc, InvalidOutcome) else f"line {lineno}: {exc}"
                raise ValueError(f"{path}: {message}") from None
            outcome["received"] = math.inf  # the user's file wins over logged outcomes
            outcome["source"] = "csv"
            out.append(outcome)
    return out


def _number(text: Any) -> int | float:
    text = (text or "").strip()
    try:
        return int(text)
    except ValueError:
        return float(text)


def outcome_from_log(doc: dict[str, Any]) -> dict[str, Any] | None:
    """A logged outcome record as the join needs it, or ``None`` when it is damaged."""
    try:
        out: dict[str, Any] = {"time": parse_when(doc["time"]).timestamp(),
                               "received": parse_when(doc.get("received") or doc["time"]).timestamp(),
                               "label": float(doc["label"]), "source": "log"}
    except (KeyError, TypeError, ValueError):
        return None
    if isinstance(doc.get("request_id"), str):
        out["request_id"] = doc["request_id"]
    elif isinstance(doc.get("key"), str):
        out["key"] = doc["key"]
    else:
        return None
    if isinstance(doc.get("row"), int):
        out["row"] = doc["row"]
    return out


# -- the joined data --------------------------------------------------------------------------


def unit_of(record: PredictionRecord) -> str:
    """The unit of randomisation of a request: the sticky key (one user), else the request."""
    return f"k:{record.key}" if record.key is not None else f"r:{record.request_id}"


@dataclass
class VariantData:
    """What the report knows of one variant (or shadow)."""

    name: str
    shadow: bool
    # the prediction records: predict output, predictions (rows,) or (rows, classes)
    records: list[PredictionRecord] = field(default_factory=list)
    # joined outcomes (answering variants), in prediction-time order of the requests
    y: np.ndarray = field(default_factory=lambda: np.empty(0))
    p: np.ndarray = field(default_factory=lambda: np.empty(0))
    t: np.ndarray = field(default_factory=lambda: np.empty(0))
    g: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))  # unit of each row

    @property
    def units(self) -> int:
        """Independent units (users, or requests without a key) behind the joined outcomes."""
        return int(np.unique(self.g).size)

    @property
    def requests(self) -> int:
        return len(self.records)

    @property
    def rows(self) -> int:
        return sum(r.rows for r in self.records)

    def latencies(self) -> np.ndarray:
        return np.array([r.latency_ms for r in self.records], dtype=np.float64)

    def scores(self) -> np.ndarray:
        if not self.records:
            return np.empty(0)
        return np.concatenate([r.predictions for r in self.records])

    def models(self) -> list[dict[str, Any]]:
        counts = Counter((r.model_name, r.model_version) for r in self.records)
        return [{"name": m, "version": v, "requests": n} for (m, v), n in counts.most_common()]


@dataclass
class ShadowPairs:
    """A shadow's predictions next to the answer's on the same rows."""

    shadow: str
    answer_variant: str
    answer: np.ndarray
    shadow_p: np.ndarray
    y: np.ndarray  # the label of each row, NaN where no outcome joined
    t: np.ndarray
    g: np.ndarray  # the unit (user, else request) of each row


@dataclass
class JoinStats:
    outcomes: int = 0
    by_request_id: int = 0
    by_key: int = 0
    unmatched: int = 0
    ambiguous: int = 0
    bad_row: int = 0
    superseded: int = 0
    bad_label: int = 0
    damaged: int = 0
    no_prediction: int = 0  # the logged prediction of the row is null (not a number)
    outside_range: int = 0  # joined to a prediction outside [since, until)
    pinned: int = 0  # joined to a request whose caller pinned the variant


@dataclass
class Dataset:
    endpoint: str
    objective: str               # binary / regression / multiclass
    model_objectives: list[str]
    variants: dict[str, VariantData]   # answering variants, config order when known
    shadows: dict[str, VariantData]
    pairs: list[ShadowPairs]
    join: JoinStats
    excluded_records: dict[str, int]
    first_variant: str | None    # variant_index 0 in the latest records: the default control


def build_dataset(endpoint: str, prediction_docs: list[dict[str, Any]],
                  outcomes: list[dict[str, Any]], *, since: datetime, until: datetime,
                  objective: str | None = None) -> Dataset:
    """Join ``outcomes`` (as :func:`outcome_from_log` / :func:`read_outcomes_csv` make them)
    to the prediction records of ``endpoint`` made in [since, until).

    Outcomes are matched against every record given, also those outside the range (pass the
    records up to the latest outcome's time): an outcome by key belongs to the latest
    prediction at or before it, which may be after ``until``; it is then counted as outside
    the range, never given to an older prediction. Requests whose caller pinned the variant
    (``x-scorefn-variant``) were not randomised: they are left out of the arms."""
    lo, hi = since.timestamp(), until.timestamp()
    excluded: Counter[str] = Counter()
    records = [r for r in (_prediction(doc, endpoint, excluded) for doc in prediction_docs)
               if r is not None]
    records.sort(key=lambda r: r.time)
    every_answer = [r for r in records if not r.shadow]
    in_range = [r for r in records if lo <= r.time < hi]
    if len(records) > len(in_range):
        excluded["outside the time range"] += len(records) - len(in_range)
    pinned = sum(1 for r in in_range if r.pinned and not r.shadow)
    if pinned:
        excluded["variant pinned by the caller (not randomised)"] += pinned
    model_objectives = sorted({r.objective for r in in_range})
    family = objective or _majority_family(in_range)
    answers = [r for r in in_range if not r.shadow and not r.pinned]
    shadows = [r for r in in_range if r.shadow]

    # Variants in config order (variant_index), else by first appearance.
    order: dict[str, tuple[int, float]] = {}
    for r in answers:
        idx = r.variant_index if r.variant_index is not None else 1_000
        order[r.variant] = min(order.get(r.variant, (idx, r.time)), (idx, r.time))
    latest_first = next((r.variant for r in reversed(answers) if r.variant_index == 0), None)
    variants = {name: VariantData(name, False) for name in sorted(order, key=order.__getitem__)}
    for r in answers:
        variants[r.variant].records.append(r)
    shadow_data: dict[str, VariantData] = {}
    for r in shadows:
        shadow_data.setdefault(r.variant, VariantData(r.variant, True)).records.append(r)

    by_id: dict[str, list[tuple[float, int]]] = defaultdict(list)
    by_key: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for i, r in enumerate(every_answer):  # in time order: the lists stay sorted
        by_id[r.request_id].append((r.time, i))
        if r.key is not None:
            by_key[r.key].append((r.time, i))

    join = JoinStats(outcomes=len(outcomes))
    chosen: dict[tuple[int, int], tuple[float, float, float, str]] = {}
    for o in outcomes:
        label = o["label"]
        if "request_id" in o:
            picked = _pick(by_id.get(o["request_id"]), o["time"], allow_after=True)
            how = "request_id"
        else:
            picked = _pick(by_key.get(o["key"]), o["time"], allow_after=False)
            how = "key"
        if picked is None:
            join.unmatched += 1
            continue
        rows = every_answer[picked].rows
        if "row" in o:
            if o["row"] >= rows:
                join.bad_row += 1
                continue
            row = o["row"]
        elif rows == 1:
            row = 0
        else:
            join.ambiguous += 1
            continue
        target = (picked, row)
        if target in chosen:
            join.superseded += 1
            if (o["received"], o["time"]) < chosen[target][:2]:
                continue
        chosen[target] = (o["received"], o["time"], label, how)

    labels_ok = _label_check(family, every_answer)
    unit_ids: dict[str, int] = {}
    joined: dict[str, list[tuple[float, float, Any, int]]] = defaultdict(list)
    row_labels: dict[tuple[int, int], float] = {}
    for (i, row), (_, _, label, how) in chosen.items():
        r = every_answer[i]
        if not lo <= r.time < hi:
            join.outside_range += 1
            continue
        if r.pinned:
            join.pinned += 1
            continue
        if not labels_ok(label, r):
            join.bad_label += 1
            continue
        if not np.all(np.isfinite(_values(r)[row])):
            join.no_prediction += 1  # a null in the log: NaN would rank above every score
            continue
        if how == "request_id":
            join.by_request_id += 1
        else:
            join.by_key += 1
        unit = unit_ids.setdefault(unit_of(r), len(unit_ids))
        joined[r.variant].append((r.time, label, _values(r)[row], unit))
        row_labels[(i, row)] = label
    for name, items in joined.items():
        items.sort(key=lambda x: x[0])
        v = variants[name]
        v.t = np.array([x[0] for x in items])
        v.y = np.array([x[1] for x in items], dtype=np.float64)
        v.p = np.array([x[2] for x in items], dtype=np.float64)
        v.g = np.array([x[3] for x in items], dtype=np.int64)

    pairs = _shadow_pairs(shadows, every_answer, by_id, row_labels, unit_ids)
    return Dataset(endpoint, family, model_objectives, variants, shadow_data, pairs, join,
                   dict(excluded), latest_first)


def _prediction(doc: dict[str, Any], endpoint: str, excluded: Counter) -> PredictionRecord | None:
    """The record of a logged line the join can use: of ``endpoint``, with predictions (a
    value per row, or a row of values per row); ``None`` (counted in ``excluded``) else."""
    try:
        record = PredictionRecord.from_json(doc, endpoint=endpoint)
    except DamagedRecord:
        excluded["damaged"] += 1
        return None
    if record.endpoint != endpoint:
        excluded["another endpoint"] += 1
        return None
    if record.error is not None:
        excluded["failed requests (no predictions)"] += 1
        return None
    if record.output != PREDICT:
        excluded[f"{record.output} output (not predictions)"] += 1
        return None
    preds = record.predictions
    if preds is None or preds.ndim == 0 or preds.shape[0] == 0 or preds.shape[0] != record.rows:
        excluded["damaged"] += 1
        return None
    return record


def _values(record: PredictionRecord) -> np.ndarray:
    """The predictions of a record :func:`_prediction` kept (it drops those without)."""
    assert record.predictions is not None
    return record.predictions


def _majority_family(records: list[PredictionRecord]) -> str:
    counts = Counter(objective_family(r.objective) for r in records if not r.shadow)
    if not counts:
        return "binary"
    return counts.most_common(1)[0][0]


def _label_check(family: str, answers: list[PredictionRecord]
                 ) -> Callable[[float, PredictionRecord], bool]:
    if family == "binary":
        return lambda label, r: label in (0.0, 1.0)
    if family == "multiclass":
        return lambda label, r: (float(label).is_integer() and _values(r).ndim == 2
                                 and 0 <= label < _values(r).shape[1])
    return lambda label, r: math.isfinite(label)


def _pick(entries: list[tuple[float, int]] | None, t: float, *, allow_after: bool) -> int | None:
    """The index of the latest entry at or before ``t`` (else, if allowed, the earliest)."""
    if not entries:
        return None
    k = bisect.bisect_right(entries, (t, math.inf))
    if k > 0:
        return entries[k - 1][1]
    return entries[0][1] if allow_after else None


def _shadow_pairs(shadows: list[PredictionRecord], answers: list[PredictionRecord],
                  by_id: dict[str, list[tuple[float, int]]],
                  row_labels: dict[tuple[int, int], float],
                  unit_ids: dict[str, int]) -> list[ShadowPairs]:
    grouped: dict[tuple[str, str], list[tuple[float, np.ndarray, np.ndarray, np.ndarray, int]]] = \
        defaultdict(list)
    for s in shadows:
        i = _pick(by_id.get(s.request_id), s.time, allow_after=True)
        if i is None:
            continue
        a = answers[i]
        if _values(a).shape != _values(s).shape:
            continue
        y = np.array([row_labels.get((i, row), np.nan) for row in range(a.rows)])
        unit = unit_ids.setdefault(unit_of(a), len(unit_ids))
        grouped[(s.variant, a.variant)].append((a.time, _values(a), _values(s), y, unit))
    pairs = []
    for (shadow, answer), items in sorted(grouped.items()):
        pairs.append(ShadowPairs(
            shadow, answer, np.concatenate([x[1] for x in items]), np.concatenate([x[2] for x in items]),
            np.concatenate([x[3] for x in items]),
            np.concatenate([np.full(x[1].shape[0], x[0]) for x in items]),
            np.concatenate([np.full(x[1].shape[0], x[4], dtype=np.int64) for x in items])))
    return pairs


def iter_days(t: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    """(UTC day, mask) for each day that has entries in epoch times ``t``."""
    if t.size == 0:
        return
    days = (t // 86400).astype(np.int64)
    for day in np.unique(days):
        yield (datetime.fromtimestamp(int(day) * 86400, UTC).strftime("%Y-%m-%d"), days == day)
