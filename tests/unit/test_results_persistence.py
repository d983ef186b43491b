"""Result schema round-trip, atomic writes, never-overwrite run directories, export."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import pytest
from results_factory import T0, gpu_report, raw, timing

from llenergymeasure.domain.results import ExperimentResult
from llenergymeasure.results.aggregation import aggregate_process_results
from llenergymeasure.results.export import export_results
from llenergymeasure.results.persistence import (
    atomic_write_text,
    new_run_dir,
    read_result,
    write_result,
)


def _result(n_requests: int = 3) -> ExperimentResult:
    timings = [timing(float(i), [0.1, 0.02, 0.02]) for i in range(n_requests)]
    return aggregate_process_results([raw(0, 1, timings, gpu_report({"gpu:0": 42.0}, 10.0))])


def test_result_round_trips_through_json() -> None:
    result = _result()
    again = ExperimentResult.model_validate_json(result.model_dump_json())
    assert again == result
    assert again.schema_version == "2.0"
    assert again.j_per_output_token == pytest.approx(42.0 / 9)
    assert again.started_at == T0 and again.started_at.tzinfo is not None


def test_write_then_read_and_refuse_overwrite(tmp_path: Path) -> None:
    result = _result()
    path = write_result(result, tmp_path)
    assert read_result(tmp_path) == result == read_result(path)
    with pytest.raises(FileExistsError):
        write_result(result, tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


def test_read_result_reports_where_a_moved_run_directory_is_now(tmp_path: Path) -> None:
    written = tmp_path / "a" / "run_1"
    write_result(_result().model_copy(update={"run_dir": str(written)}), written)
    assert read_result(written).run_dir == str(written)
    moved = written.rename(tmp_path / "run_1_copy")
    assert read_result(moved).run_dir == str(moved)


def test_new_run_dir_never_reuses_a_directory(tmp_path: Path) -> None:
    dirs = [new_run_dir(tmp_path, "exp", T0) for _ in range(3)]
    assert [d.name for d in dirs] == [
        "exp_20260102-030405",
        "exp_20260102-030405-2",
        "exp_20260102-030405-3",
    ]
    assert all(d.is_dir() for d in dirs)


def _poll(path: str, stop_at: float, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    """Child: read ``path`` until ``stop_at``; report (reads, partial reads)."""
    reads = bad = 0
    while time.time() < stop_at:
        try:
            text = Path(path).read_text()
        except FileNotFoundError:
            continue
        reads += 1
        try:
            ExperimentResult.model_validate_json(text)
        except ValueError:
            bad += 1
    queue.put((reads, bad))


def test_reader_in_another_process_never_sees_a_partial_file(tmp_path: Path) -> None:
    big = _result(n_requests=400)  # ~100 kB of JSON
    target = tmp_path / "result.json"
    atomic_write_text(target, big.model_dump_json())
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    stop_at = time.time() + 2.5
    reader = ctx.Process(target=_poll, args=(str(target), stop_at, queue))
    reader.start()
    writes = 0
    while time.time() < stop_at:
        atomic_write_text(target, big.model_dump_json(indent=writes % 3))
        writes += 1
    reads, bad = queue.get(timeout=30)
    reader.join(timeout=30)
    assert writes > 10 and reads > 10
    assert bad == 0


def test_export_one_row_per_result(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    for _ in range(2):
        write_result(_result(), new_run_dir(tmp_path, "exp", T0))
    out = export_results(tmp_path, tmp_path / "all.parquet")
    table = pq.read_table(out).to_pylist()
    assert len(table) == 2
    assert table[0]["model"] == "tiny-llama"
    assert table[0]["gpu_energy_j"] == pytest.approx(42.0)
    assert table[0]["j_per_output_token"] == pytest.approx(42.0 / 9)
    assert table[0]["cpu_energy_j"] is None  # not measured: None, not 0
    csv_text = export_results(tmp_path, tmp_path / "all.csv").read_text()
    assert csv_text.count("\n") == 3 and "j_per_output_token" in csv_text


# ---- files others can read (issue 11, case 9) ------------------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_follow_the_umask_not_mkstemps_0600(tmp_path: Path, umask: int) -> None:
    import os
    import stat

    before = os.umask(umask)
    try:
        written = [
            atomic_write_text(tmp_path / "a.json", "{}"),
            write_result(_result(), new_run_dir(tmp_path, "r")),
        ]
    finally:
        os.umask(before)
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
    assert not list(tmp_path.rglob(".*.tmp"))


# ---- a write that fails names the path and the errno text (case 4) ----------------------------
def test_a_failed_write_names_the_path_and_errno_text_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    from llenergymeasure.exceptions import WriteError

    target = tmp_path / "study_manifest.json"
    target.write_text("old")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(WriteError) as err:
        atomic_write_text(target, "new")
    assert str(target) in str(err.value) and "No space left on device" in str(err.value)
    assert isinstance(err.value, OSError) and err.value.errno == errno.ENOSPC
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["study_manifest.json"]


def test_run_dir_under_a_file_is_a_write_error(tmp_path: Path) -> None:
    from llenergymeasure.exceptions import WriteError

    (tmp_path / "afile").write_text("")
    with pytest.raises(WriteError, match="afile"):
        new_run_dir(tmp_path / "afile", "x")


# ---- corrupt files: readers name the file and skip it (case 5) --------------------------------
def test_truncated_result_is_named_by_read_result_and_skipped_by_export(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from llenergymeasure.exceptions import ResultFileError

    good = write_result(_result(), new_run_dir(tmp_path, "good"))
    bad = new_run_dir(tmp_path, "bad") / "result.json"
    bad.write_bytes(good.read_bytes()[:100])  # truncated mid-file
    with pytest.raises(ResultFileError) as err:
        read_result(bad)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, ValueError)

    out = export_results(tmp_path, tmp_path / "all.csv")

    assert len(out.read_text().splitlines()) == 2  # header + the one good result
    assert any(str(bad) in r.getMessage() for r in caplog.records)
