"""A blob job's rows in units: the input stream parsed a unit at a time (at most ``UNIT_ROWS``
lines, the very first one ``FIRST_UNIT_ROWS``), each unit predicted as soon as it is parsed
(parsing runs ahead in a background thread), the output rows of each chunk of
``BATCH_CHUNK_ROWS`` lines handed on as one block. A single-invocation job and each chunk of a
fanned-out job score their rows here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.batch.csv_input import parse_csv_chunk
from shared.batch.csv_layout import CsvLayout
from shared.batch.features import Features, as_schema
from shared.batch.jsonl_input import parse_jsonl_chunk
from shared.batch.lines import line_chunks, max_line_bytes
from shared.batch.output import OutputWriter
from shared.batch.parsed_rows import ParsedRows
from shared.batch.prefetch import prefetch
from shared.models.model import LoadedModel
from shared.payloads import ScoringInput
from shared.payloads.common import Options
from shared.scoring.predict import predict
from shared.settings import Settings

# Rows parsed and predicted at a time: chunks of BATCH_CHUNK_ROWS lines are cut into units of at
# most UNIT_ROWS (of near equal sizes), the very first one FIRST_UNIT_ROWS, so prediction starts
# after a short parse that nothing overlaps (~15 ms for 100 features) and never waits long for
# the parser; output is still staged a whole chunk per block.
UNIT_ROWS = 8192
FIRST_UNIT_ROWS = 2048
PREFETCH_UNITS = 2  # parsed units queued ahead of the one being predicted


@dataclass(frozen=True)
class Unit:
    """The parsed rows of one unit; ``ends_block``: the last unit of its chunk (one output
    block)."""

    rows: ParsedRows
    ends_block: bool


@dataclass(frozen=True)
class ScoredOutput:
    """What scoring a stream of units did: rows predicted, output blocks staged, and the
    seconds spent in the model."""

    rows: int
    blocks: int
    predict_seconds: float


def parse_units(stream: Iterable[bytes], chunk_rows: int, *, layout: CsvLayout | None,
                feature_names: Features, id_column: str | None, first_line: int,
                unseen: dict[int, int] | None = None) -> Iterator[Unit]:
    """The rows of a CSV (``layout``; ``stream`` after the header) or JSON Lines stream, one
    :class:`Unit` of at most ``UNIT_ROWS`` lines at a time; ``ends_block`` marks the last unit
    of each chunk of ``chunk_rows`` lines (one output block). ``feature_names``: the model's
    schema (or plain names); category values the model was not trained on are counted in
    ``unseen`` (by feature index)."""
    schema = as_schema(feature_names)
    # Columns of a CSV are those of its header; a JSON Lines record may name each feature
    # and the id column (other fields are refused).
    columns = layout.columns if layout is not None else (*schema.names, id_column or "id")
    for unit in line_chunks(stream, chunk_rows, first_line=first_line, unit_rows=UNIT_ROWS,
                            first_unit_rows=FIRST_UNIT_ROWS,
                            max_line_bytes=max_line_bytes(columns),
                            code="invalid_csv" if layout is not None else "invalid_json"):
        if layout is not None:
            rows = parse_csv_chunk(unit, layout, unseen)
        else:
            rows = parse_jsonl_chunk(unit, schema, id_column, unseen)
        yield Unit(rows, unit.ends_block)


def score_units(units: Iterable[Unit], model: LoadedModel, options: Options,
                writer: OutputWriter, settings: Settings, *, header: bytes,
                stage: Callable[[int, bytes], Any],
                progress: Callable[[int], Any] | None = None,
                observe: Callable[[np.ndarray, np.ndarray | None], Any] | None = None
                ) -> ScoredOutput:
    """Predict each unit as soon as it is parsed (parsing runs ahead in a background thread:
    :func:`~shared.batch.prefetch.prefetch`) and hand the output rows of each chunk,
    ``header`` first, to ``stage(index, data)`` as one block (an input without rows gives the
    header alone). ``observe(X, predictions)``: monitoring's count of each unit (predictions
    ``None`` for raw scores)."""
    parts, index, rows, predict_seconds = [header], 0, 0, 0.0
    for unit in prefetch(units, depth=PREFETCH_UNITS):
        X = unit.rows.X
        start = time.perf_counter()
        predictions = predict(model, ScoringInput(X=X, options=options),
                              parallel_min_rows=settings.predict_parallel_min_rows,
                              max_threads=settings.predict_max_threads)
        predict_seconds += time.perf_counter() - start
        if observe is not None:
            observe(X, None if options.raw_score else predictions)
        parts.append(writer.rows(predictions, unit.rows.ids))
        rows += X.shape[0]
        if progress is not None:
            progress(rows)
        if unit.ends_block:
            data, parts = b"".join(parts), []
            if data:
                stage(index, data)
                index += 1
    data = b"".join(parts)  # the input ended inside a chunk, or had no rows (the header alone)
    if data:
        stage(index, data)
        index += 1
    return ScoredOutput(rows, index, predict_seconds)
