"""What a drift evaluation finds, as records: per feature, for the predictions, per variant of
an endpoint, and the summary written to storage and read by the report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Against = Literal["reference", "model", "variant"]


@dataclass(frozen=True)
class RateChange:
    """A rate (missing or out-of-range values) in the baseline and in the served rows, and the
    two-sided p-value of a two-proportion test that they are equal (1.0 when either side has no
    rows)."""

    baseline: float
    served: float
    p_value: float


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's drift from a baseline: ``psi`` (population stability index over the
    bins, missing values not included), ``js`` (Jensen-Shannon distance, base 2, in [0, 1]),
    ``chi2_p`` (chi-square test of homogeneity of the bin counts), the missing and
    out-of-range rates. ``baseline_bins``/``served_bins``: the counts compared (for plots),
    ``labels`` one per bin."""

    name: str
    kind: str
    psi: float
    js: float
    chi2_p: float
    missing: RateChange
    out_of_range: RateChange
    baseline_rows: int
    served_rows: int
    labels: list[str] = field(default_factory=list)
    baseline_bins: list[int] = field(default_factory=list)
    served_bins: list[int] = field(default_factory=list)
    drifted: bool = False  # over the PSI threshold with enough rows, or a rate jumped

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> FeatureDrift:
        doc = dict(doc)
        doc["missing"] = RateChange(**doc["missing"])
        doc["out_of_range"] = RateChange(**doc["out_of_range"])
        return cls(**doc)


@dataclass(frozen=True)
class PredictionDrift:
    """The predictions' drift from a baseline (same measures as a feature's)."""

    kind: str
    psi: float
    js: float
    chi2_p: float
    baseline_rows: int
    served_rows: int
    labels: list[str] = field(default_factory=list)
    baseline_bins: list[int] = field(default_factory=list)
    served_bins: list[int] = field(default_factory=list)
    drifted: bool = False

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> PredictionDrift:
        return cls(**doc)


@dataclass(frozen=True)
class Comparison:
    """Served rows of one variant's model compared with a baseline: its reference profile
    (``reference``), the model's training ranges alone (``model``: no reference, so only
    out-of-range and missing values), or another variant (``variant``: ``baseline_name``).
    ``features`` are ranked, most drifted first."""

    endpoint: str
    variant: str
    model: str
    version: str
    against: Against
    baseline_name: str
    served_rows: int
    features: list[FeatureDrift]
    predictions: PredictionDrift | None
    note: str = ""

    @property
    def worst(self) -> FeatureDrift | None:
        return self.features[0] if self.features else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Comparison:
        doc = dict(doc)
        doc["features"] = [FeatureDrift.from_dict(f) for f in doc["features"]]
        p = doc.get("predictions")
        doc["predictions"] = PredictionDrift.from_dict(p) if p is not None else None
        return cls(**doc)


@dataclass(frozen=True)
class WindowPoint:
    """One hour of served predictions of a variant (for the predictions-over-time plot)."""

    hour: str  # ISO hour, UTC: 2026-12-07T18
    variant: str
    rows: int
    prediction_bins: list[int]


@dataclass(frozen=True)
class DriftSummary:
    """One evaluation of an endpoint over a window: every comparison, the hourly predictions,
    and the thresholds used."""

    endpoint: str
    evaluated_at: str
    window_start: str
    window_end: str
    psi_threshold: float
    min_rows: int
    comparisons: list[Comparison]
    timeline: list[WindowPoint] = field(default_factory=list)
    prediction_labels: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> DriftSummary:
        doc = dict(doc)
        doc["comparisons"] = [Comparison.from_dict(c) for c in doc["comparisons"]]
        doc["timeline"] = [WindowPoint(**p) for p in doc.get("timeline", [])]
        return cls(**doc)
