"""``llem compare A B``: did anything change between two runs of the same configurations?

Configurations are matched by config hash (the same effective configuration gives the same
hash on any machine). For each matched configuration and each metric of
``domain.study.STUDY_METRICS`` the comparison is the ratio of means B / A, with a CI from
Welch's t on the log of the ratio (delta method, ``study.stats.ratio_ci``): it widens with
few cycles instead of pretending (a percentile bootstrap would cover only ~71 % at 2 cycles
per side). A CI that excludes 1 is a change larger than the cycle-to-cycle spread; fewer
than 2 cycles on a side give no CI. What differs between A and
B in how they were measured (machine, meter, basis) and in the stack (driver, CUDA,
libraries) is listed first: that is usually the question ("did the driver upgrade change
energy?").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from llenergymeasure.domain.stats import ConfidenceInterval
from llenergymeasure.domain.study import STUDY_METRICS
from llenergymeasure.reporting.collect import Collection, SavedRun, collect
from llenergymeasure.reporting.methods import METHOD_ASPECTS, STACK_ASPECTS, aspects
from llenergymeasure.study.stats import FEW_SAMPLES, ratio_ci

CONFIDENCE = 0.95


@dataclass(frozen=True)
class MetricRatio:
    """B / A for one metric of one configuration."""

    metric: str
    unit: str
    a_mean: float | None
    b_mean: float | None
    n_a: int
    n_b: int
    ci: ConfidenceInterval | None
    not_compared_reason: str | None = None

    @property
    def ratio(self) -> float | None:
        """mean(B) / mean(A), None when not compared."""
        return self.ci.mean if self.ci else None

    @property
    def contains_one(self) -> bool | None:
        """Whether the CI includes 1 (no change detected); None when not compared."""
        return None if self.ci is None else self.ci.low <= 1.0 <= self.ci.high


@dataclass(frozen=True)
class ConfigComparison:
    """One configuration found in both A and B."""

    config_hash: str
    label: str
    n_a: int
    n_b: int
    ratios: dict[str, MetricRatio]


@dataclass(frozen=True)
class AspectChange:
    """An aspect of measurement or software stack whose values differ between A and B."""

    aspect: str
    a_values: tuple[str, ...]
    b_values: tuple[str, ...]
    changes_meaning: bool


@dataclass(frozen=True)
class Comparison:
    """Everything ``llem compare`` prints."""

    dir_a: Path
    dir_b: Path
    matched: list[ConfigComparison]
    only_a: list[tuple[str, str]]  # (config_hash, label)
    only_b: list[tuple[str, str]]
    changes: list[AspectChange]
    confidence: float
    problems: list[str] = field(default_factory=list)


def compare(
    dir_a: Path | str,
    dir_b: Path | str,
    *,
    confidence: float = CONFIDENCE,
) -> Comparison:
    """Compare the results under ``dir_b`` with those under ``dir_a`` (see module docstring).

    Raises ``ResultsError`` when either directory holds no readable result.
    """
    a, b = collect(dir_a), collect(dir_b)
    groups_a, groups_b = _by_hash(a), _by_hash(b)
    matched = [
        _compare_config(h, groups_a[h], groups_b[h], confidence) for h in groups_a if h in groups_b
    ]
    return Comparison(
        dir_a=Path(dir_a),
        dir_b=Path(dir_b),
        matched=matched,
        only_a=[(h, runs[0].config_label) for h, runs in groups_a.items() if h not in groups_b],
        only_b=[(h, runs[0].config_label) for h, runs in groups_b.items() if h not in groups_a],
        changes=_changes(a, b),
        confidence=confidence,
        problems=[*(f"A: {p}" for p in a.problems), *(f"B: {p}" for p in b.problems)],
    )


def _by_hash(collection: Collection) -> dict[str, list[SavedRun]]:
    """Completed runs per config hash, in first-seen order."""
    groups: dict[str, list[SavedRun]] = {}
    for run in collection.runs:
        if run.completed:
            groups.setdefault(run.result.config_hash, []).append(run)
    return groups


def metric_values(runs: Sequence[SavedRun], metric: str) -> list[float]:
    """The finite values of one metric over the runs (one per cycle)."""
    values = [getattr(r.result, metric) for r in runs]
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def _compare_config(
    config_hash: str,
    runs_a: list[SavedRun],
    runs_b: list[SavedRun],
    confidence: float,
) -> ConfigComparison:
    ratios = {}
    for metric, (_heading, unit) in STUDY_METRICS.items():
        va, vb = metric_values(runs_a, metric), metric_values(runs_b, metric)
        ci = ratio_ci(vb, va, confidence=confidence)
        reason = None
        if ci is None:
            reason = _no_ci_reason(va, vb)
        ratios[metric] = MetricRatio(
            metric=metric,
            unit=unit,
            a_mean=sum(va) / len(va) if va else None,
            b_mean=sum(vb) / len(vb) if vb else None,
            n_a=len(va),
            n_b=len(vb),
            ci=ci,
            not_compared_reason=reason,
        )
    return ConfigComparison(
        config_hash=config_hash,
        label=runs_a[0].config_label,
        n_a=len(runs_a),
        n_b=len(runs_b),
        ratios=ratios,
    )


def _no_ci_reason(va: Sequence[float], vb: Sequence[float]) -> str:
    """Why a metric's ratio has no CI."""
    if not va or not vb:
        return "not measured in A" if not va else "not measured in B"
    if len(va) < 2 or len(vb) < 2:
        return "fewer than 2 cycles on a side: no spread to build a CI from"
    return "a mean is 0 or negative"


def _changes(a: Collection, b: Collection) -> list[AspectChange]:
    """Aspects whose set of values in A differs from that in B."""
    out = []
    for name in (*METHOD_ASPECTS, *STACK_ASPECTS):
        va = tuple(dict.fromkeys(aspects(r.result)[name] for r in a.runs))
        vb = tuple(dict.fromkeys(aspects(r.result)[name] for r in b.runs))
        if set(va) != set(vb):
            out.append(AspectChange(name, va, vb, name in METHOD_ASPECTS))
    return out


# ---- text ----------------------------------------------------------------------------------
_SHORT = {
    "energy_j": "energy",
    "j_per_output_token": "J/token",
    "output_tokens_per_s": "tok/s",
    "ttft_ms_mean": "TTFT",
    "itl_ms_mean": "ITL",
}


def format_comparison(c: Comparison) -> str:
    """Plain text: what differs between A and B, then per configuration the ratios B/A
    with their CIs (``!`` marks a CI that excludes 1), then unmatched configurations."""
    pct = round(c.confidence * 100)
    lines = [
        f"Compare B / A: ratio of means per configuration, {pct}% CI over cycles (Welch t, log ratio)",
        f"  A: {c.dir_a}",
        f"  B: {c.dir_b}",
    ]
    if c.changes:
        lines.append("What differs between A and B:")
        for ch in c.changes:
            tag = " (methods differ: not like for like)" if ch.changes_meaning else ""
            lines.append(
                f"  {ch.aspect}{tag}: A {' | '.join(ch.a_values)} -> B {' | '.join(ch.b_values)}"
            )
    else:
        lines.append(
            "Same machine, backend, energy meters and basis, driver, CUDA and libraries in A and B."
        )
    lines += _ratio_table(c)
    lines += [f"only in A (no match in B): {label} ({h[:8]})" for h, label in c.only_a]
    lines += [f"only in B (no match in A): {label} ({h[:8]})" for h, label in c.only_b]
    return "\n".join(lines)


def _ratio_table(c: Comparison) -> list[str]:
    if not c.matched:
        return ["No configuration of A has the same config hash as one of B: nothing to compare."]
    header = ["config", "cycles A/B", *_SHORT.values()]
    table = [header]
    few = False
    for m in c.matched:
        ratios, cis = [m.label, f"{m.n_a}/{m.n_b}"], ["", ""]
        for metric in _SHORT:
            r = m.ratios[metric]
            if r.ci is None:
                ratios.append("n/a")
                cis.append("")
                continue
            few = few or min(r.n_a, r.n_b) < FEW_SAMPLES
            mark = "" if r.contains_one else "!"
            ratios.append(f"{mark}{r.ci.mean:.3f}")
            cis.append(f"[{r.ci.low:.3f},{r.ci.high:.3f}]")
        table += [ratios, cis]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    out = [
        "  ".join(
            [
                row[0].ljust(widths[0]),
                *(v.rjust(w) for v, w in zip(row[1:], widths[1:], strict=True)),
            ]
        ).rstrip()
        for row in table
    ]
    out.insert(1, "  (second line of each config: the CI of the ratio; ! = CI excludes 1: changed)")
    if few:
        out.append(
            f"  note: fewer than {FEW_SAMPLES} cycles on a side: the CIs are wide and rest on "
            "the cycles being roughly normal; more cycles narrow them"
        )
    unmeasured = sorted(
        {
            f"{_SHORT[r.metric]}: {r.not_compared_reason}"
            for m in c.matched
            for r in m.ratios.values()
            if r.not_compared_reason
        }
    )
    out += [f"  n/a = {u}" for u in unmeasured]
    return out
