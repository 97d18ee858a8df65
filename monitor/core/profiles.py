"""The reference profile and the data contract as data: what a model's inputs looked like and may look like.

Built by `monitor.profile` (from training files, or inferred), read by the checks in the core.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from monitor.core.categories import category_text


@dataclass(frozen=True)
class NumericProfile:
    kind: str
    count: int
    null_rate: float
    nan_rate: float
    sentinel_rate: float
    sentinels: list[float]
    min: float | None
    max: float | None
    mean: float | None
    std: float | None
    edges: list[float]  # interior edges: bin i is [edges[i-1], edges[i]); the outer bins are open
    fractions: list[float]  # len(edges) + 1, over the finite non-sentinel values
    top_share: float | None = None  # the largest share of one exact value among them (None: profiled by 0.1)

    def centers(self) -> np.ndarray:
        """Bin centers, the outer bins closed at the reference min and max (for Wasserstein)."""
        e = np.asarray(self.edges, dtype=float)
        lo = self.min if self.min is not None else (e[0] if len(e) else 0.0)
        hi = self.max if self.max is not None else (e[-1] if len(e) else 0.0)
        full = np.r_[min(lo, e[0]) if len(e) else lo, e, max(hi, e[-1]) if len(e) else hi]
        centers: np.ndarray = 0.5 * (full[:-1] + full[1:])
        return centers

    def counts(self) -> np.ndarray:
        finite = self.count * (1 - self.null_rate - self.nan_rate - self.sentinel_rate)
        return np.asarray(self.fractions) * max(finite, 0.0)


@dataclass(frozen=True)
class CategoricalProfile:
    kind: str
    count: int
    null_rate: float
    categories: list[str]  # the most frequent first; the fraction list has one more entry: __other__
    fractions: list[float]

    def counts(self) -> np.ndarray:
        return np.asarray(self.fractions) * self.count * (1 - self.null_rate)


FieldProfile = NumericProfile | CategoricalProfile


@dataclass(frozen=True)
class ReferenceProfile:
    model: str
    version: str
    created_at: str
    source: str
    rows: int
    event_rate: float | None  # events per second over the reference's time span
    fields: dict[str, FieldProfile] = field(default_factory=dict)
    # With labels in the reference data: {"type", "block" (performance sufficient statistics),
    # "expected_accuracy" (CBPE of the reference scores), "metrics"}.
    performance: dict[str, Any] | None = None
    # Season profiles (`monitor.core.seasons`): {"by", "min_rows", "fields": {name: {bucket: [count, mean,
    # std, counts]}}}; None for a reference without seasons.
    seasons: dict[str, Any] | None = None
    # The PCA of the numeric features (`monitor.core.multivariate.Multivariate.to_dict`) and, under "profile",
    # the reference's reconstruction errors profiled as a numeric field; None: not fitted.
    multivariate: dict[str, Any] | None = None
    # feature -> how much the score moves with it, in [0, 1] (|Pearson correlation| for a numeric feature, the
    # correlation ratio for a categorical one); None without a score column in the reference data.
    importance: dict[str, float] | None = None
    # Per segment (the model's `segments:`, `<field>=<value>` or `<field>=(other)`): the other features'
    # profiles over that segment's rows, for the segment's view; {"max_segments", "min_rows", "fields": {label:
    # {field: profile}}}. A segment without one (too few rows) is compared with the overall profiles.
    segments: dict[str, Any] | None = None

    def segment_profiles(self, label: str) -> dict[str, FieldProfile]:
        raw = ((self.segments or {}).get("fields") or {}).get(label) or {}
        return {name: _profile(f) for name, f in raw.items()}

    def multivariate_profile(self) -> NumericProfile | None:
        raw = (self.multivariate or {}).get("profile")
        return NumericProfile(**raw) if raw else None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> ReferenceProfile:
        raw = json.loads(text)
        fields: dict[str, FieldProfile] = {}
        raw.setdefault("performance", None)
        raw.setdefault("seasons", None)
        raw.setdefault("multivariate", None)
        raw.setdefault("importance", None)
        raw.setdefault("segments", None)
        for name, f in raw.pop("fields").items():
            fields[name] = _profile(f)
        return cls(fields=fields, **raw)


def _profile(raw: dict[str, Any]) -> FieldProfile:
    return NumericProfile(**raw) if raw["kind"] == "numeric" else CategoricalProfile(**raw)


OTHER_SEGMENT = "(other)"  # a segment field's values beyond max_segments (and no value)


def segment_values(reference: ReferenceProfile | None, field_name: str, max_segments: int) -> list[str]:
    """The values of a segment field with a view of their own: the reference's most frequent."""
    prof = reference.fields.get(field_name) if reference is not None else None
    return list(prof.categories[:max_segments]) if isinstance(prof, CategoricalProfile) else []


class FieldContract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["numeric", "categorical"]
    avro_type: str | None = None
    nullable: bool = True
    min: float | None = None
    max: float | None = None
    allowed: list[str] | None = None
    sentinels: list[float] = []

    @field_validator("allowed", mode="before")
    @classmethod
    def _spelled_as_the_stream(cls, value: Any) -> Any:
        """Allowed categories written as numbers or booleans (`[1, 2]`) are spelled as the stream's."""
        return [category_text(v) for v in value] if isinstance(value, list) else value
    max_missing_rate: float = Field(0.1, ge=0, le=1)
    max_nan_rate: float = Field(0.05, ge=0, le=1)
    max_sentinel_rate: float = Field(0.01, ge=0, le=1)
    max_out_of_range_rate: float = Field(0.01, ge=0, le=1)
    max_unseen_rate: float = Field(0.01, ge=0, le=1)
    allow_constant: bool = False


class Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    reference_version: str | None = None
    fields: dict[str, FieldContract]
