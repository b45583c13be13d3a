"""``{"records": [{"feature": value, ...}, ...]}``: values by feature name.

A feature absent from a record is missing (NaN); a name the model does not know is an
error, since it is most often a typo that would otherwise silently become NaN.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import InvalidPayload
from .common import check_count, rows_to_matrix


def parse_records(records: Any, feature_names: Sequence[str], max_rows: int) -> np.ndarray:
    if not isinstance(records, list):
        raise InvalidPayload("'records' must be a list of objects", code="invalid_records")
    check_count(len(records), max_rows, "records")
    if set(map(type, records)) != {dict}:
        i = next(i for i, rec in enumerate(records) if type(rec) is not dict)
        raise InvalidPayload(f"records[{i}] is not an object", code="invalid_records")
    unknown = set().union(*records) - set(feature_names)
    if unknown:
        i, name = next((i, k) for i, rec in enumerate(records) for k in rec if k in unknown)
        raise InvalidPayload(f"records[{i}] has unknown feature {name[:64]!r}; the model's features "
                             f"are {list(feature_names)[:20]}", code="unknown_feature")
    rows = [[rec.get(name) for name in feature_names] for rec in records]
    return rows_to_matrix(rows, feature_names, max_rows, "records")
