"""``{"records": [{"feature": value, ...}, ...]}``: values by feature name.

A feature absent from a record is missing (NaN); a name the model does not know is an
error, since it is most often a typo that would otherwise silently become NaN. Names may
be the model's, or the names it was trained with before LightGBM's renaming (``mean
radius`` for ``mean_radius``). A categorical feature takes its category values, as a
DataFrame column of that category type would hold them (an unseen value is missing).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shared.errors import InvalidPayload
from shared.models.schema import FeatureSchema
from shared.payloads.common import check_count, rows_to_matrix


def parse_records(records: Any, schema: FeatureSchema, max_rows: int) -> np.ndarray:
    if not isinstance(records, list):
        raise InvalidPayload("'records' must be a list of objects", code="invalid_records")
    check_count(len(records), max_rows, "records")
    if set(map(type, records)) != {dict}:
        i = next(i for i, rec in enumerate(records) if type(rec) is not dict)
        raise InvalidPayload(f"records[{i}] is not an object", code="invalid_records")
    names = schema.names
    sent = set().union(*records)
    if sent <= schema.name_set:
        rows = [[rec.get(name) for name in names] for rec in records]
    else:
        rows = _rows_by_trained_names(records, sent, schema)
    if schema.categorical:
        _category_values_to_codes(rows, schema)
    elif schema.mapping == "unknown" and any(type(v) is str for row in rows for v in row):
        schema.needs_values()
    return rows_to_matrix(rows, schema, max_rows, "records")


def _rows_by_trained_names(records: list[dict[str, Any]], sent: set[str],
                           schema: FeatureSchema) -> list[list[Any]]:
    """Rows from records naming some features as they were trained (or not at all)."""
    index: dict[str, int] = {}
    for name in sent:
        j = schema.resolve(name)
        if j is None:
            i = next(i for i, rec in enumerate(records) if name in rec)
            raise InvalidPayload(f"records[{i}] has unknown feature {name[:64]!r}; the model's "
                                 f"features are {list(schema.names)[:20]}", code="unknown_feature")
        index[name] = j
    rows = []
    width = len(schema.names)
    for i, rec in enumerate(records):
        row: list[Any] = [None] * width
        named: dict[int, str] = {}
        for name, value in rec.items():
            j = index[name]
            if j in named:
                raise InvalidPayload(
                    f"records[{i}] names feature {schema.names[j]!r} twice, as "
                    f"{named[j][:64]!r} and {name[:64]!r}: send one of them",
                    code="ambiguous_feature")
            named[j] = name
            row[j] = value
        rows.append(row)
    return rows


def _category_values_to_codes(rows: list[list[Any]], schema: FeatureSchema) -> None:
    """In place: each categorical feature's values become their codes (NaN when unseen)."""
    for cats in schema.categorical:
        j = cats.index
        for i, row in enumerate(rows):
            try:
                row[j] = cats.code_of(row[j])
            except InvalidPayload as exc:
                raise InvalidPayload(f"records[{i}]: {exc.message}", code=exc.code) from None
