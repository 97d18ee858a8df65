"""Data contracts: what a model's input may look like, inferred from a reference and edited by people.

A contract sets per-field limits (nullability, range, allowed categories, special-value rates) and the
expected schema; `monitor.core.partition` checks every window against it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from monitor.core.profiles import CategoricalProfile, Contract, FieldContract, NumericProfile, ReferenceProfile
from monitor.errors import ConfigError
from monitor.settings import CheckSettings


def load_contract(path: Path) -> Contract:
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read contract {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"contract {path} is not valid YAML: {exc}") from exc
    try:
        return Contract.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"contract {path}: {exc}") from exc


def _rate_limit(reference_rate: float, floor: float) -> float:
    """Twice the reference rate plus a floor: room for sampling noise, none for a broken pipeline."""
    return round(min(1.0, max(floor, 2 * reference_rate + floor)), 6)


def infer_contract(
    profile: ReferenceProfile, avro_types: dict[str, str], checks: dict[str, CheckSettings], margin: float = 0.1
) -> Contract:
    """A contract from a reference: ranges widened by `margin` of the span, allowed = seen categories."""
    fields: dict[str, FieldContract] = {}
    for name, prof in profile.fields.items():
        c = checks[name] if name in checks else CheckSettings()
        if isinstance(prof, NumericProfile):
            lo = hi = None
            if prof.min is not None and prof.max is not None:
                span = prof.max - prof.min
                lo, hi = prof.min - margin * span, prof.max + margin * span
            fields[name] = FieldContract(
                type="numeric",
                avro_type=avro_types.get(name),
                nullable=prof.null_rate > 0,
                min=lo,
                max=hi,
                sentinels=prof.sentinels,
                max_missing_rate=_rate_limit(prof.null_rate, 0.01),
                max_nan_rate=_rate_limit(prof.nan_rate, 0.01),
                max_sentinel_rate=_rate_limit(prof.sentinel_rate, 0.01),
                max_out_of_range_rate=c.max_out_of_range_rate,
                allow_constant=(prof.std or 0.0) == 0.0,
            )
        elif isinstance(prof, CategoricalProfile):
            # Every category the reference saw is allowed; a long tail folded into "other" is not listed.
            other = prof.fractions[-1] if prof.fractions else 0.0
            fields[name] = FieldContract(
                type="categorical",
                avro_type=avro_types.get(name),
                nullable=prof.null_rate > 0,
                allowed=None if other > 0 else list(prof.categories),
                max_missing_rate=_rate_limit(prof.null_rate, 0.01),
                max_unseen_rate=c.max_unseen_rate,
                allow_constant=len(prof.categories) <= 1,
            )
    return Contract(model=profile.model, reference_version=profile.version, fields=fields)


_NUMERIC_ONLY = {"min", "max", "sentinels", "max_nan_rate", "max_sentinel_rate", "max_out_of_range_rate"}
_CATEGORICAL_ONLY = {"allowed", "max_unseen_rate"}


def dump_contract(contract: Contract) -> str:
    data: dict[str, Any] = contract.model_dump(exclude_none=True)
    for spec in data["fields"].values():
        for key in _CATEGORICAL_ONLY if spec["type"] == "numeric" else _NUMERIC_ONLY:
            spec.pop(key, None)
    header = (f"# Data contract for model {contract.model}, inferred from reference "
              f"{contract.reference_version}.\n# Edit freely; point the model's `contract:` setting at this file.\n")
    return header + yaml.safe_dump(data, sort_keys=False)
