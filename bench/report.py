"""The result rows: one table on standard output, the same rows in bench/results/*.json."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import msgspec

RESULTS = Path(__file__).resolve().parent / "results"


class Row(msgspec.Struct, kw_only=True):
    """One figure. `herald` and `limit` are in the unit the figure's name gives; `ratio` is
    herald / limit when there is a limit; `target` says what passes."""

    figure: str
    herald: float
    limit: float | None
    ratio: float | None
    target: str
    passed: bool


def ratio_row(figure: str, herald: float, limit: float, at_least: float, target: str) -> Row:
    """A throughput figure that must reach `at_least` times its limit."""
    ratio = herald / limit if limit > 0 else math.inf
    return Row(figure=figure, herald=herald, limit=limit, ratio=ratio, target=target, passed=ratio >= at_least)


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
            "pass" if r.passed else "FAIL",
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
