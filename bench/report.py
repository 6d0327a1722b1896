"""The result rows: one table on standard output, the same rows in bench/results/*.json, and the
same table in docs/performance.md between its markers (`python -m bench.report --write-docs`
writes it there again from the last saved run)."""

from __future__ import annotations

import argparse
import datetime as dt
import math
from pathlib import Path

import msgspec

RESULTS = Path(__file__).resolve().parent / "results"
DOC = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


class Row(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One figure. `herald` and `limit` are in the unit the figure's name gives; `ratio` is
    herald / limit when there is a limit; `target` says what passes. `skipped` says why a row's
    limit could not be measured in this run (the peer could not be installed, say): such a row
    neither passes nor fails, and has no limit rather than one carried from another run."""

    figure: str
    herald: float
    limit: float | None
    ratio: float | None
    target: str
    passed: bool
    skipped: str = ""


class Skipped(msgspec.Struct, frozen=True):
    """A limit this run could not measure, and why, in a few words."""

    reason: str


def ratio_row(figure: str, herald: float, limit: float | Skipped, at_least: float, target: str) -> Row:
    """A throughput figure that must reach `at_least` times its limit, or, when the limit was not
    measured, Herald's figure alone with the reason."""
    if isinstance(limit, Skipped):
        return Row(
            figure=figure, herald=herald, limit=None, ratio=None, target=target, passed=False, skipped=limit.reason
        )
    ratio = herald / limit if limit > 0 else math.inf
    return Row(figure=figure, herald=herald, limit=limit, ratio=ratio, target=target, passed=ratio >= at_least)


def result(row: Row) -> str:
    """The table's last column."""
    if row.skipped:
        return f"skipped: {row.skipped}"
    return "pass" if row.passed else "FAIL"


def _number(value: float | None) -> str:
    if value is None:
        return "—"
    if math.isinf(value):
        return "inf"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(rows: list[Row]) -> str:
    head = ("figure", "Herald", "limit", "ratio", "target", "result")
    body = [
        (
            r.figure,
            _number(r.herald),
            _number(r.limit),
            "—" if r.ratio is None else _number(r.ratio) + "×",
            r.target,
            result(r),
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    right = {1, 2, 3}

    def fmt(line: tuple[str, ...]) -> str:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))]
        return "| " + " | ".join(cells) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if i in right else ("-" * (w + 2)) for i, w in enumerate(widths)) + "|"
    return "\n".join([fmt(head), rule, *(fmt(line) for line in body)])


def _clean(value: float | None) -> float | None:
    """JSON has no infinity or NaN."""
    if value is None or math.isnan(value) or math.isinf(value):
        return None
    return round(value, 4)


def write(rows: list[Row], report: str, directory: Path = RESULTS) -> tuple[Path, Path]:
    """latest.json plus a dated copy (and the printed report beside each, machine included)."""
    directory.mkdir(parents=True, exist_ok=True)
    data = [
        msgspec.structs.replace(r, herald=_clean(r.herald) or 0.0, limit=_clean(r.limit), ratio=_clean(r.ratio))
        for r in rows
    ]
    encoded = msgspec.json.format(msgspec.json.encode(data), indent=2) + b"\n"
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H-%M")
    latest, dated = directory / "latest.json", directory / f"{stamp}.json"
    for path in (latest, dated):
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(encoded)
        tmp.replace(path)
        path.with_suffix(".txt").write_text(report + "\n")
    return latest, dated


def stamp_text(stamp: str) -> str:
    """`2026-12-02T05-12` (a dated copy's name) as `2026-12-02 05:12 UTC`."""
    day, _, clock = stamp.partition("T")
    return f"{day} {clock.replace('-', ':')} UTC"


def docs_section(rows: list[Row], machine: str, date: str, notes: list[str]) -> str:
    """What goes between the markers: the run's date and machine, the table, the run's notes."""
    lines = [f"Run of {date}. {machine}", "", table(rows)]
    if notes:
        lines += ["", *(f"- {note}" for note in notes)]
    return "\n".join(lines)


def write_docs(rows: list[Row], machine: str, date: str, notes: list[str], doc: Path = DOC) -> None:
    """Replace what lies between the marker lines (each alone on its line) in `doc` with this run's
    section; keep the rest."""
    lines = doc.read_text().split("\n")
    if BEGIN not in lines or END not in lines[lines.index(BEGIN) :]:
        raise ValueError(f"{doc}: no {BEGIN} … {END} marker lines to write the table between")
    start = lines.index(BEGIN)
    end = lines.index(END, start)
    body = docs_section(rows, machine, date, notes).split("\n")
    tmp = doc.with_suffix(".tmp")
    tmp.write_text("\n".join([*lines[: start + 1], *body, *lines[end:]]))
    tmp.replace(doc)


def saved_run(directory: Path = RESULTS) -> tuple[list[Row], str, str, list[str]]:
    """The last saved run: rows from latest.json; machine line and notes from latest.txt; its date
    from the dated copy holding the same rows (else latest.json's time)."""
    latest = directory / "latest.json"
    encoded = latest.read_bytes()
    rows = msgspec.json.decode(encoded, type=list[Row])
    report = latest.with_suffix(".txt").read_text().splitlines() if latest.with_suffix(".txt").exists() else []
    machine = next((line for line in report if line.startswith("Machine: ")), "Machine: not recorded")
    notes = [line[2:] for line in report if line.startswith("- ")]
    dated = sorted(p for p in directory.glob("2*.json") if p.read_bytes() == encoded)
    if dated:
        date = stamp_text(dated[-1].stem)
    else:
        date = dt.datetime.fromtimestamp(latest.stat().st_mtime, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return rows, machine, date, notes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description="The last saved bench run.")
    parser.add_argument(
        "--write-docs", action="store_true", help=f"write its table into {DOC.name} between the markers"
    )
    args = parser.parse_args(argv)
    rows, machine, date, notes = saved_run()
    if args.write_docs:
        write_docs(rows, machine, date, notes)
        print(f"wrote the run of {date} into {DOC}")
    else:
        print(docs_section(rows, machine, date, notes))


if __name__ == "__main__":
    main()
