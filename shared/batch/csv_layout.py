"""A CSV input's layout: how the columns its header names map to the model's features.

The header names the columns (any order), by the names the model stores or the names it was
trained with (``mean radius`` for ``mean_radius``); a column that is neither a feature nor
``id_column`` is an error; a feature without a column is missing (NaN). Fields may be quoted
but must not contain line breaks.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass

import numpy as np

from shared.batch.features import Features, as_schema
from shared.errors import InvalidPayload
from shared.models.schema import Categories, FeatureSchema


@dataclass(frozen=True)
class CsvLayout:
    """How the columns of a CSV file map to the model's features."""

    columns: tuple[str, ...]
    feature_names: tuple[str, ...]
    id_index: int | None
    targets: np.ndarray  # feature index of each scored column, in file order
    in_order: bool  # the scored columns are exactly the features, in order
    id_is_feature: bool = False  # the id column is scored too (as JSON Lines does)
    # (position among the scored columns, categories) of each pandas-categorical feature
    categorical: tuple[tuple[int, Categories], ...] = ()
    schema: FeatureSchema | None = None

    @property
    def width(self) -> int:
        return len(self.columns)

    @property
    def scored_names(self) -> list[str]:
        """The scored columns' names as the header gives them, in file order."""
        return [c for j, c in enumerate(self.columns) if j != self.id_index or self.id_is_feature]


def csv_layout(header: bytes, features: Features, id_column: str | None) -> CsvLayout:
    """The layout of a CSV file whose first line is ``header``, for a model's schema (or plain
    feature names). Columns name features as stored or as trained (``mean radius``)."""
    schema = as_schema(features)
    try:
        text = header.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidPayload("the CSV header is not UTF-8 text", code="invalid_csv") from None
    if not text.strip():
        raise InvalidPayload("the CSV input has no header line naming its columns", code="invalid_csv")
    if "\r" in text:
        raise InvalidPayload("the CSV input has CR line breaks (old Mac style) or a CR inside its "
                             "header: use LF or CRLF line breaks", code="invalid_csv")
    try:
        columns = tuple(name.strip() for name in next(csv.reader([text])))
    except csv.Error as exc:
        raise InvalidPayload(f"the CSV header cannot be read: {exc}", code="invalid_csv") from None
    seen: set[str] = set()
    for name in columns:
        if name in seen:
            raise InvalidPayload(f"column {name[:64]!r} appears twice in the CSV header",
                                 code="invalid_csv")
        seen.add(name)
    id_index = None
    if id_column is not None:
        if id_column not in seen:
            raise InvalidPayload(f"id_column {id_column[:64]!r} is not a column of the CSV input",
                                 code="missing_id_column")
        id_index = columns.index(id_column)
    # An id column that is also a feature is copied through and scored, as in JSON Lines.
    id_is_feature = id_column is not None and schema.resolve(id_column) is not None
    scored = [c for c in columns if c != id_column or id_is_feature]
    unknown = [c for c in scored if schema.resolve(c) is None]
    if unknown:
        raise InvalidPayload(f"column {unknown[0][:64]!r} is not a feature of the model (nor the "
                             f"id_column); the model's features are {list(schema.names)[:20]}",
                             code="unknown_column")
    index = schema.resolve_all(scored, "the CSV header")  # one feature named twice: ambiguous
    targets = np.array([index[c] for c in scored], dtype=np.intp)
    n = len(schema.names)
    in_order = len(targets) == n and bool((targets == np.arange(n)).all())
    categorical = tuple((p, schema.by_index[j]) for p, j in enumerate(targets.tolist())
                        if j in schema.by_index)
    return CsvLayout(columns, schema.names, id_index, targets, in_order, id_is_feature,
                     categorical, schema)
