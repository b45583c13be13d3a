"""``{"rows": [[...], ...]}``: positional values in the model's feature order."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .common import rows_to_matrix


def parse_rows(rows: Any, feature_names: Sequence[str], max_rows: int) -> np.ndarray:
    """Rows of exactly ``len(feature_names)`` numbers or nulls each."""
    return rows_to_matrix(rows, feature_names, max_rows, "rows")
