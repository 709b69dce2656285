"""The results file of `visionq submit --out`: what a rerun skips, and what an interrupted write leaves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from visionq.client.results import Outcome, ResultsFile, compact, finished, read


def _line(
    path: str, status: str, *, key: str = "k", job_id: str | None = "j", code: str | None = None
) -> str:
    line: dict[str, Any] = {"path": path, "sha256": "s", "key": key, "job_id": job_id, "status": status}
    if code is not None:
        line["error"] = {"code": code, "message": "m"}
    return json.dumps(line)


def test_ended_jobs_and_refused_non_images_are_finished_and_nothing_else(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    lines = [
        _line("ok.jpg", "succeeded"),
        _line("bad.jpg", "failed", code="corrupt"),  # the job failed: asking again returns it
        _line("cancelled.jpg", "cancelled"),
        _line("text.txt", "failed", job_id=None, code="not_an_image"),
        _line("queued.jpg", "queued"),  # --no-wait
        _line("down.jpg", "failed", job_id=None, code="connection_error"),
        _line("full.jpg", "failed", job_id=None, code="queue_full"),
        _line("slow.jpg", "running", code="wait_timeout"),
    ]
    out.write_text("\n".join(lines) + "\n")

    done = finished(out)

    assert sorted(path for path, _ in done) == ["bad.jpg", "cancelled.jpg", "ok.jpg", "text.txt"]
    assert all(outcome.earlier for outcome in done.values())


def test_a_line_of_other_parameters_does_not_finish_a_file(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    out.write_text(_line("ok.jpg", "succeeded", key="conf-0.25") + "\n")

    assert ("ok.jpg", "conf-0.25") in finished(out)
    assert ("ok.jpg", "conf-0.5") not in finished(out)


def test_a_later_unfinished_line_does_not_undo_an_end(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    broken = _line("a.jpg", "failed", job_id=None, code="connection_error")
    out.write_text(_line("a.jpg", "succeeded") + "\n" + broken + "\n")

    assert finished(out)[("a.jpg", "k")].status == "succeeded"


def test_a_line_cut_off_by_a_kill_is_passed_over_and_the_next_starts_on_its_own_line(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    out.write_text(_line("a.jpg", "succeeded") + "\n" + _line("b.jpg", "succeeded")[:30])

    record = ResultsFile(out)
    record.append(Outcome("b.jpg", "s", "k", "j2", "succeeded", detections=[]))
    record.close()

    assert [(o.path, o.job_id) for o in read(out)] == [("a.jpg", "j"), ("b.jpg", "j2")]
    assert ("b.jpg", "k") in finished(out)


def test_a_missing_file_has_nothing_finished(tmp_path: Path) -> None:
    assert finished(tmp_path / "nothing.jsonl") == {}


def test_compact_keeps_each_files_latest_line_in_the_order_files_first_appeared(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    lines = [_line("a.jpg", "queued"), _line("b.jpg", "queued"), _line("a.jpg", "succeeded"), "{cut"]
    out.write_text("\n".join(lines) + "\n")

    compact(out)

    assert [json.loads(raw) for raw in out.read_text().splitlines()] == [
        json.loads(_line("a.jpg", "succeeded")),
        json.loads(_line("b.jpg", "queued")),
    ]
    assert list(tmp_path.iterdir()) == [out]  # no partial file left beside it


def test_an_outcome_writes_detections_and_error_only_when_it_has_them() -> None:
    plain = Outcome("a.jpg", "s", "k", "j", "queued")
    refused = Outcome("t.txt", "s", "k", None, "failed", error={"code": "not_an_image", "message": "m"})

    assert plain.line() == {"path": "a.jpg", "sha256": "s", "key": "k", "job_id": "j", "status": "queued"}
    assert refused.line()["error"] == {"code": "not_an_image", "message": "m"}
    assert "detections" not in refused.line()
    assert (plain.failed, refused.failed, refused.finished) == (False, True, True)


def test_compact_puts_the_runs_files_first_in_the_runs_order(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    out.write_text("\n".join(_line(name, "succeeded") for name in ("c.jpg", "old.jpg", "a.jpg", "b.jpg")))

    compact(out, ["a.jpg", "b.jpg", "c.jpg"])

    assert [o.path for o in read(out)] == ["a.jpg", "b.jpg", "c.jpg", "old.jpg"]
