"""The features a batch input is read against: a model's schema (names as stored and as
trained, categories), or plain feature names (no categories)."""

from __future__ import annotations

from collections.abc import Sequence

from shared.models.schema import FeatureSchema

Features = FeatureSchema | Sequence[str]


def as_schema(features: Features) -> FeatureSchema:
    """A model's schema, or one for plain feature names (no categories)."""
    return features if isinstance(features, FeatureSchema) else FeatureSchema(tuple(features))
