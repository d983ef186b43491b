"""The energy layer's typed seams: what meters declare, the NVML adapter's installed library,
the edges a meter reports, and flag de-duplication."""

from __future__ import annotations

from llenergymeasure.core.energy.quality import drop_repeated_flags, merge_flags_by_code
from llenergymeasure.domain.energy import QualityFlag


def test_drop_repeated_flags_keeps_distinct_messages_of_one_code() -> None:
    flags = [
        QualityFlag(code="mig", message="gpu:0"),
        QualityFlag(code="short_window", message="short"),
        QualityFlag(code="mig", message="gpu:1"),
        QualityFlag(code="mig", message="gpu:0", severity="critical"),  # same code and message
    ]
    kept = drop_repeated_flags(flags)
    assert [(f.code, f.message, f.severity) for f in kept] == [
        ("mig", "gpu:0", "warning"),
        ("short_window", "short", "warning"),
        ("mig", "gpu:1", "warning"),
    ]
    assert len(merge_flags_by_code(flags)) == 2  # the other policy: one flag per code
