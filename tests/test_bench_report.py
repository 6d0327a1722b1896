"""`make bench` writes docs/performance.md's table itself: what lies between the markers is
replaced by the run's rows, date and machine; the rest of the document is kept as it was."""

from __future__ import annotations

import shutil
from pathlib import Path

import msgspec
import pytest

from bench import report

ROWS = [
    report.ratio_row("badge 200, 1k unread (req/s)", 9602.0, 5377.0, 1.0, "≥ 1.0× bare route + Redis GET"),
    report.Row(figure="list p50 (ms)", herald=2.03, limit=None, ratio=None, target="< 5 ms", passed=True),
]


def test_the_table_between_the_markers_is_replaced_and_the_rest_kept(tmp_path: Path) -> None:
    doc = tmp_path / "performance.md"
    shutil.copy(report.DOC, doc)  # the real document: it must carry the markers
    before = doc.read_text()
    head, _, rest = before.partition("\n" + report.BEGIN + "\n")
    _, _, tail = rest.partition("\n" + report.END + "\n")
    head, tail = head + "\n", "\n" + tail

    report.write_docs(ROWS, "Machine: cores 2", "2026-12-05 00:00 UTC", ["a note"], doc=doc)

    after = doc.read_text()
    assert after.startswith(head + report.BEGIN + "\n")
    assert after.endswith(report.END + tail)
    inside = after[len(head) + len(report.BEGIN) : len(after) - len(tail) - len(report.END)]
    assert inside.startswith("\nRun of 2026-12-05 00:00 UTC. Machine: cores 2\n")
    badge = next(line for line in inside.splitlines() if line.startswith("| badge 200"))
    assert [cell.strip() for cell in badge.strip("|").split("|")] == [
        "badge 200, 1k unread (req/s)",
        "9,602",
        "5,377",
        "1.79×",
        "≥ 1.0× bare route + Redis GET",
        "pass",
    ]
    assert "| list p50 (ms)" in inside
    assert "- a note\n" in inside
    # a second run replaces the first run's table rather than adding to it
    report.write_docs(ROWS[:1], "Machine: cores 4", "2026-12-06 00:00 UTC", [], doc=doc)
    again = doc.read_text()
    assert again.count("\n" + report.BEGIN + "\n") == again.count("\n" + report.END + "\n") == 1
    assert "cores 4" in again
    assert "list p50" not in again
    assert again.startswith(head) and again.endswith(tail)


def test_a_document_without_markers_is_refused_and_left_alone(tmp_path: Path) -> None:
    doc = tmp_path / "plain.md"
    doc.write_text("# nothing to replace\n")
    with pytest.raises(ValueError, match="marker lines"):
        report.write_docs(ROWS, "Machine: x", "today", [], doc=doc)
    assert doc.read_text() == "# nothing to replace\n"


def test_the_saved_run_is_read_back_with_its_date_machine_and_notes(tmp_path: Path) -> None:
    encoded = msgspec.json.encode(ROWS)
    (tmp_path / "latest.json").write_bytes(encoded)
    (tmp_path / "2026-12-02T05-12.json").write_bytes(encoded)
    (tmp_path / "2026-11-22T21-39.json").write_bytes(b"[]")
    (tmp_path / "latest.txt").write_text("Machine: cores 2; cpu X\n\n| table |\n\n- fan-out limit: plain INSERT\n")
    rows, machine, date, notes = report.saved_run(tmp_path)
    assert rows == ROWS
    assert machine == "Machine: cores 2; cpu X"
    assert date == "2026-12-02 05:12 UTC"
    assert notes == ["fan-out limit: plain INSERT"]


def test_a_row_whose_limit_was_not_measured_says_why_and_carries_no_limit(tmp_path: Path) -> None:
    measured = report.ratio_row("list (req/s)", 2300.0, 230.0, 10.0, "≥ 10× Django peer")
    skipped = report.ratio_row("badge (req/s)", 17656.0, report.Skipped("Django peer not run (no pip)"), 10.0, "≥ 10×")
    assert (measured.limit, measured.passed, measured.skipped) == (230.0, True, "")
    assert (skipped.herald, skipped.limit, skipped.ratio, skipped.passed) == (17656.0, None, None, False)
    assert skipped.skipped == "Django peer not run (no pip)"

    lines = report.table([measured, skipped]).splitlines()
    assert lines[2].rstrip(" |").endswith("pass")
    cells = [cell.strip() for cell in lines[3].strip("|").split("|")]
    assert cells == ["badge (req/s)", "17,656", "—", "—", "≥ 10×", "skipped: Django peer not run (no pip)"]

    latest, _ = report.write([measured, skipped], "Machine: x", directory=tmp_path)
    saved = msgspec.json.decode(latest.read_bytes())
    assert "skipped" not in saved[0]  # a measured row is written as before
    assert saved[1]["skipped"] == "Django peer not run (no pip)"
    assert report.saved_run(tmp_path)[0] == [measured, skipped]


def test_rows_saved_before_rows_could_be_skipped_still_read() -> None:
    old = b'[{"figure":"f","herald":1.0,"limit":2.0,"ratio":0.5,"target":"t","passed":false}]'
    (row,) = msgspec.json.decode(old, type=list[report.Row])
    assert row.skipped == ""
    assert report.result(row) == "FAIL"
