"""A model's reference profile from a file of training or validation rows.

The file is read by the batch jobs' own parser (``shared.batch``), so its columns follow the
same rules: a header naming the model's features (as stored or as trained), any order, a
feature without a column is missing, category values by value; one more column is allowed,
``label`` (the target, which a validation file usually has; it is skipped). Parquet files are
converted to CSV first with pyarrow, when it is installed here.

At most ``max_rows`` rows are kept (a uniform sample, seeded: the same file gives the same
profile); bins and counts come from them and the model's predictions on them.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from shared.batch.csv_layout import csv_layout
from shared.batch.lines import split_first_line
from shared.batch.units import parse_units
from shared.errors import ScoreError
from shared.models.model import LoadedModel
from shared.monitoring.binning import reference_binning
from shared.monitoring.blobs import Reference
from shared.monitoring.profile import count

MAX_ROWS = 200_000
READ_BYTES = 4 * 1024 * 1024


class ReferenceError(ValueError):
    """The reference file cannot be read for this model (the message says why)."""


def _blocks(path: Path) -> Iterator[bytes]:
    if path.suffix.lower() in (".parquet", ".pq"):
        yield _parquet_as_csv(path)
        return
    with path.open("rb") as f:
        while block := f.read(READ_BYTES):
            yield block


def _parquet_as_csv(path: Path) -> bytes:
    try:
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq
    except ImportError:
        raise ReferenceError("reading Parquet needs pyarrow (`pip install pyarrow`); or pass "
                             "the rows as CSV") from None
    buffer = io.BytesIO()
    pacsv.write_csv(pq.read_table(path), buffer,
                    write_options=pacsv.WriteOptions(quoting_style="needed"))
    return buffer.getvalue()


def read_rows(path: Path, model: LoadedModel, *, label: str | None = None,
              max_rows: int = MAX_ROWS, progress: Callable[[int], None] | None = None,
              seed: int = 0) -> tuple[np.ndarray, int]:
    """The rows of a CSV (or Parquet) file as the model's matrix, sampled down to
    ``max_rows`` (uniformly, with ``seed``); and how many rows the file had."""
    schema = model.info.schema
    try:
        header, stream = split_first_line(_blocks(path))
        layout = csv_layout(header, schema, label)
        units = parse_units(stream, 65_536, layout=layout, feature_names=schema,
                            id_column=label, first_line=2)
        rng = np.random.default_rng(seed)
        kept = np.empty((0, model.info.num_features))
        keys = np.empty(0)
        seen = 0
        for unit in units:
            X = unit.rows.X
            # A uniform sample of any stream: keep the max_rows rows of smallest random key.
            kept = np.concatenate([kept, X])
            keys = np.concatenate([keys, rng.random(X.shape[0])])
            if kept.shape[0] > max_rows:
                top = np.argpartition(keys, max_rows)[:max_rows]
                top.sort()
                kept, keys = kept[top], keys[top]
            seen += X.shape[0]
            if progress is not None:
                progress(seen)
    except ScoreError as exc:
        raise ReferenceError(f"{path.name}: {exc.message}") from None
    if kept.shape[0] == 0:
        raise ReferenceError(f"{path.name} has no rows")
    return kept, seen


def build_reference(path: Path, model: LoadedModel, *, label: str | None = None,
                    max_rows: int = MAX_ROWS,
                    progress: Callable[[int], None] | None = None) -> tuple[Reference, int]:
    """The reference profile of ``model`` from the rows in ``path``; and the file's rows."""
    X, total = read_rows(path, model, label=label, max_rows=max_rows, progress=progress)
    predictions = model.predict(X)
    binning = reference_binning(model.info, X, predictions)
    reference = Reference(model.info.sha256, binning, count(binning, X, predictions), path.name,
                          datetime.now(UTC).isoformat(timespec="seconds"))
    return reference, total
