"""The HTML report: self-contained, one declared chart per figure, the basis on every energy
figure, mixed methods called out, absent data said (the browser render test is in
tests/integration/test_report_render.py)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from report_factory import write_study

from llenergymeasure import report
from llenergymeasure.domain.energy import QualityFlag
from llenergymeasure.exceptions import ExtraNotInstalledError
from llenergymeasure.reporting import html as report_html
from llenergymeasure.reporting.phases import NOT_MEASURED, phase_energy

H100_TIMELINE = (
    Path(__file__).resolve().parents[2]
    / "benchmarks/results/h100-2026-11-23/gpu_energy_timeline.parquet"
)


def _charts(text: str) -> tuple[int, list[str]]:
    declared = re.search(r'<meta name="llem-chart-count" content="(\d+)">', text)
    assert declared is not None
    return int(declared[1]), re.findall(r'<section class="chart" data-chart="([\w-]+)">', text)


def _section(text: str, chart: str) -> str:
    """The HTML from a chart's section to the next heading."""
    start = text.index(f'data-chart="{chart}"')
    return text[start : text.find("<h2>", start)]


def test_study_report_is_self_contained_with_the_basis_on_every_energy_figure(
    tmp_path: Path,
) -> None:
    flag = QualityFlag(code="short_window", message="window 1 s < 10 s", severity="warning")
    study_dir = write_study(tmp_path, "rep", batch_sizes=(1, 4, 8), n_cycles=2, warnings=[flag])
    out = report(study_dir)
    assert out == study_dir / "report.html"
    text = out.read_text()
    declared, charts = _charts(text)
    assert charts == ["energy-per-token", "energy-ttft", "energy-itl", "energy-throughput"]
    assert declared == len(charts) == text.count('class="plotly-graph-div"')
    from plotly.offline import get_plotlyjs

    assert text.count(get_plotlyjs()) == 1  # plotly.js inline, once
    ours = text.replace(get_plotlyjs(), "")  # (the library itself contains URL strings)
    assert "<script src=" not in ours and "http" not in ours
    assert text.count("Plotly.newPlot(") == len(charts)
    for chart in charts:  # every energy figure names its basis
        assert "energy basis: gpu gross counter (counter, gpu, nvml)" in _section(text, chart)
    assert "Pareto front" in text and "not measured: this result has no phase attribution" in text
    assert "no timeline" in text and "short_window" in text and "window 1 s &lt; 10 s" in text
    assert "batch_size=8" in text and "&#9733; batch_size=8" in text  # best marked


def test_estimates_and_mixed_methods_are_called_out(tmp_path: Path) -> None:
    write_study(tmp_path / "root", "gpu", batch_sizes=(1,), n_cycles=2)
    write_study(tmp_path / "root", "cpu", batch_sizes=(1,), n_cycles=2, estimate=True, seed=4)
    text = report(tmp_path / "root").read_text()
    assert "These results were not measured the same way" in text
    assert "energy meter differs" in text and "energy basis differs" in text
    assert "is an ESTIMATE, not a measurement" in text
    section = _section(text, "energy-per-token")
    assert "MIXED energy bases" in section and "ESTIMATE, not a measurement" in section
    assert "gpu: batch_size=1" in text and "cpu: batch_size=1" in text  # study names in labels


def test_timeline_chart_from_timeseries_parquet(tmp_path: Path) -> None:
    study_dir = write_study(tmp_path, "tl", batch_sizes=(1, 4), n_cycles=1)
    run_dirs = sorted(p.parent for p in study_dir.glob("*/result.json"))
    shutil.copy(H100_TIMELINE, run_dirs[0] / "timeseries.parquet")
    shutil.copy(H100_TIMELINE, run_dirs[1] / "timeseries.parquet")
    text = report(study_dir, tmp_path / "out.html").read_text()
    declared, charts = _charts(text)
    assert charts[-1] == "timeline" and declared == 5
    timeline = _section(text, "timeline")
    assert "power (W)" in timeline and "SM clock (MHz)" in timeline
    assert '"updatemenus"' in timeline  # a drop-down to pick the experiment


def test_single_experiment_report(tmp_path: Path) -> None:
    study_dir = write_study(tmp_path, "one", batch_sizes=(2,), n_cycles=1)
    run_dir = next(study_dir.glob("*/result.json")).parent
    text = report(run_dir).read_text()  # the run directory alone: no study around it
    declared, charts = _charts(text)
    assert declared == len(charts) == 4
    assert "llem report: experiment one_b2" in text


def test_phase_energy_is_read_when_present() -> None:
    """The typed ``energy.phases``; results without it (older versions) say so."""
    from llenergymeasure.domain.phases import Estimate, PhaseEnergy, PhaseEnergyReport

    assert phase_energy(SimpleNamespace(energy=None)) is None  # type: ignore[arg-type]
    rep = PhaseEnergyReport(
        window_s=10.0,
        phases={
            "prefill": PhaseEnergy(phase="prefill", duration_s=1.0, energy_j=Estimate(value=1.5)),
            "decode": PhaseEnergy(phase="decode", duration_s=9.0, energy_j=Estimate(value=8.0)),
        },
    )
    got = phase_energy(SimpleNamespace(energy=SimpleNamespace(phases=rep)))  # type: ignore[arg-type]
    assert got is not None and [(p.phase, p.energy_j) for p in got] == [
        ("prefill", 1.5),
        ("decode", 8.0),
    ]
    assert got[0].method == "counter_regression"
    assert NOT_MEASURED.startswith("not measured")


def test_report_without_plotly_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study_dir = write_study(tmp_path, "np", batch_sizes=(1,), n_cycles=1)

    def missing() -> None:
        raise ExtraNotInstalledError(
            'llem report needs plotly -> pip install "llenergymeasure[report]"'
        )

    monkeypatch.setattr(report_html, "_plotly", missing)
    with pytest.raises(ExtraNotInstalledError, match=r"llenergymeasure\[report\]"):
        report(study_dir)
    said: list[str] = []
    progress = SimpleNamespace(message=said.append)
    assert report_html.write_study_report(study_dir, progress) is None  # type: ignore[arg-type]
    assert len(said) == 1 and 'pip install "llenergymeasure[report]"' in said[0]
    assert not (study_dir / "report.html").exists()
