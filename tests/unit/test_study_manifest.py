"""Study manifest: atomic round trip, newest-unfinished lookup, design-change refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from llenergymeasure.config.models import StudyConfig
from llenergymeasure.exceptions import StudyError
from llenergymeasure.results.persistence import new_run_dir
from llenergymeasure.study.grid import expand_study
from llenergymeasure.study.manifest import (
    check_same_design,
    find_resumable,
    new_manifest,
    read_manifest,
    write_manifest,
)


def _study(values: list[int], **execution: object) -> StudyConfig:
    return StudyConfig(
        study_name="s",
        base={"model": "tiny-llama", "device": "cpu"},
        sweep={"max_output_tokens": values},
        execution=dict(execution),
    )


def test_new_manifest_lists_every_config_cycle_pending_in_plan_order(tmp_path: Path) -> None:
    plan = expand_study(_study([2, 3], n_cycles=2, order="grouped"))
    manifest = new_manifest(plan)
    write_manifest(tmp_path, manifest)

    back = read_manifest(tmp_path)

    assert [(e.label, e.cycle) for e in back.entries] == [
        ("max_output_tokens=2", 1),
        ("max_output_tokens=2", 2),
        ("max_output_tokens=3", 1),
        ("max_output_tokens=3", 2),
    ]
    assert {e.status for e in back.entries} == {"pending"}
    assert back.design_hash == plan.design_hash
    assert [p.name for p in tmp_path.iterdir()] == ["study_manifest.json"]  # no temp left


def test_find_resumable_picks_newest_unfinished_of_that_name(tmp_path: Path) -> None:
    plan = expand_study(_study([2]))
    dirs = []
    for status in ("running", "interrupted", "completed"):
        d = new_run_dir(tmp_path, "s")
        m = new_manifest(plan)
        m.status = status  # type: ignore[assignment]
        write_manifest(d, m)
        dirs.append(d)
    other = new_run_dir(tmp_path, "s2")
    write_manifest(
        other, new_manifest(expand_study(_study([2]).model_copy(update={"study_name": "s2"})))
    )

    assert find_resumable(tmp_path, "s") == dirs[1]
    assert find_resumable(tmp_path, "nothing") is None


def test_changed_design_is_refused_naming_the_change() -> None:
    manifest = new_manifest(expand_study(_study([2, 3], order="shuffled", shuffle_seed=1)))
    changed = expand_study(_study([2, 4], order="shuffled", shuffle_seed=2))

    with pytest.raises(StudyError) as err:
        check_same_design(manifest, changed)

    text = str(err.value)
    assert "config added: max_output_tokens=4" in text
    assert "config removed: max_output_tokens=3" in text
    assert "shuffle_seed: 1 -> 2" in text
    check_same_design(manifest, expand_study(_study([2, 3], order="shuffled", shuffle_seed=1)))


def test_unreadable_manifest_is_a_study_error(tmp_path: Path) -> None:
    (tmp_path / "study_manifest.json").write_text('{"study_name": ')
    with pytest.raises(StudyError, match="not a valid study manifest"):
        read_manifest(tmp_path)


# ---- resume identity: the expanded design, not the YAML's spelling (issue 11, case 6) -------
def _plan(sweep: dict[str, list[object]], **base: object):  # type: ignore[no-untyped-def]
    return expand_study(
        StudyConfig(
            study_name="s",
            base={"model": "tiny-llama", "device": "cpu", "n": 2, **base},
            sweep=sweep,
            execution={"n_cycles": 2},
        )
    )


def test_same_expanded_design_resumes_whatever_its_spelling() -> None:
    manifest = new_manifest(_plan({"max_output_tokens": [8, 16]}))

    check_same_design(manifest, _plan({"max_output_tokens": [8.0, 16.0]}))  # 8.0 is 8
    spelled_out = _plan(
        {"max_output_tokens": [8, 16]},
        random_seed=42,  # defaults written out
        decoder={"strategy": "greedy", "ignore_eos": True},
        pytorch={},  # an empty section is no section
    )
    check_same_design(manifest, spelled_out)


def test_a_changed_field_is_named_with_old_and_new_values() -> None:
    manifest = new_manifest(_plan({"max_output_tokens": [8, 16]}))

    with pytest.raises(StudyError) as err:
        check_same_design(manifest, _plan({"max_output_tokens": [8, 16]}, n=3))
    text = str(err.value)
    assert "n: 2 -> 3 (every config)" in text
    assert "config added" not in text  # the same grid points, one field changed

    with pytest.raises(StudyError) as err:
        check_same_design(manifest, _plan({"max_output_tokens": [8, 32]}))
    text = str(err.value)
    assert "config removed: max_output_tokens=16" in text
    assert "config added: max_output_tokens=32" in text
    assert "max_output_tokens: 16 -> 32" in text


def test_a_refused_resume_is_an_input_error_exit_2(tmp_path: Path) -> None:
    from llenergymeasure.cli._common import exit_code_for
    from llenergymeasure.exceptions import StudyDirError

    manifest = new_manifest(_plan({"max_output_tokens": [8]}))
    with pytest.raises(StudyDirError) as err:
        check_same_design(manifest, _plan({"max_output_tokens": [9]}))
    assert exit_code_for(err.value) == 2
    (tmp_path / "study_manifest.json").write_text('{"study_name": ')
    with pytest.raises(StudyDirError) as bad:
        read_manifest(tmp_path)
    assert str(tmp_path / "study_manifest.json") in str(bad.value)
    assert exit_code_for(bad.value) == 2


def test_find_resumable_refuses_its_own_corrupt_manifest_but_not_another_studys(
    tmp_path: Path,
) -> None:
    from llenergymeasure.exceptions import StudyDirError

    other = tmp_path / "s_fast_20260101-000000"
    other.mkdir()
    (other / "study_manifest.json").write_text("{")  # another study named s_fast
    assert find_resumable(tmp_path, "s") is None
    own = new_run_dir(tmp_path, "s")
    (own / "study_manifest.json").write_text('{"study_name": "s", "entr')
    with pytest.raises(StudyDirError, match="not a valid study manifest"):
        find_resumable(tmp_path, "s")
