"""`harness report --html`: one self-contained HTML page of results (images inlined, CSS inline, no network)."""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.atomic import write_text

# Leaderboard columns: the frame's column and its header. `budget` is added by the report to `rank`'s frame.
COLUMNS = (
    ("rank", "#"),
    ("run", "run"),
    ("architecture", "architecture"),
    ("origin", "origin"),
    ("status", "status"),
    ("val_set", "sample · val"),
    ("val_accuracy", "val acc"),
    ("val_auc", "val AUC"),
    ("parameters", "parameters"),
    ("epochs", "epochs"),
    ("seconds", "time (s)"),
    ("budget", "budget"),
)
NUMERIC = frozenset({"rank", "val_accuracy", "val_auc", "holdout_auc", "gap", "parameters", "epochs", "seconds"})
HELD = (("holdout_auc", "holdout AUC"), ("gap", "val − holdout"))  # after val AUC when a holdout was scored
VERDICT_CLASSES = {"supported": "good", "not supported": "bad"}  # anything else: inconclusive

CSS = """
:root { --ink: #1f2328; --muted: #59636e; --line: #d1d9e0; --stripe: #f6f8fa; --accent: #0969da; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.5 -apple-system, "Segoe UI", "Helvetica Neue", Arial, sans-serif; color: var(--ink);
       background: #fff; }
main { max-width: 1220px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 32px 0 10px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 6px; }
p { margin: 6px 0; }
.meta { color: var(--muted); }
code { font: 12.5px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: var(--stripe);
       padding: 1px 4px; border-radius: 4px; }
.banner { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 6px; padding: 8px 12px; margin: 12px 0; }
.verdict { border: 1px solid var(--line); border-left: 6px solid #bf8700; border-radius: 6px; padding: 12px 16px;
           background: #fffdf5; }
.verdict.good { border-left-color: #1a7f37; background: #f4fbf6; }
.verdict.bad { border-left-color: #cf222e; background: #fff6f6; }
.verdict .sentence { font-size: 15.5px; font-weight: 600; }
details { margin-top: 8px; color: var(--muted); }
summary { cursor: pointer; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { padding: 5px 8px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: baseline; }
th { background: var(--stripe); font-weight: 600; white-space: nowrap; border-bottom: 2px solid var(--line); }
tbody tr:nth-child(even) { background: #fbfcfd; }
tbody tr:hover { background: #eef4ff; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.run { font: 12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; white-space: nowrap; }
td.val_set { white-space: nowrap; }
td.budget { text-align: center; font-weight: 600; }
td.budget.compared { color: #1a7f37; }
dl.budgets { display: grid; grid-template-columns: max-content 1fr; gap: 2px 10px; margin: 10px 0 0;
             font-size: 12.5px; color: var(--muted); }
dl.budgets dt { font-weight: 600; color: var(--ink); }
dl.budgets dd { margin: 0; }
tr.unranked td { color: #8c959f; }
tr.top td:first-child { font-weight: 700; color: var(--accent); }
figure { margin: 14px 0 22px; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 6px; }
p.note { color: var(--muted); font-size: 12.5px; }
footer { margin-top: 36px; color: var(--muted); font-size: 12px; }
"""


@dataclass(frozen=True)
class Figure:
    """A PNG to inline, under a heading, with a caption."""

    heading: str
    path: Path
    caption: str = ""


@dataclass(frozen=True)
class Page:
    """Everything the page shows; the report fills it, this module only renders it."""

    scope: str
    synthetic: bool
    verdict: str
    verdict_sentence: str
    verdict_detail: str
    rule: str
    leaderboard: pd.DataFrame
    ranking: str
    compared_budget: str | None = None
    notes: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    curves: list[Figure] = field(default_factory=list)
    written: str = ""
    title: str = "harness results"


def _inline(text: str) -> str:
    """Escaped text with the report's Markdown emphasis and code spans as HTML."""
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", out)


def _rule(text: str) -> str:
    """VERDICT_RULE's paragraph and numbered list as HTML."""
    paragraph: list[str] = []
    items: list[str] = []
    for line in text.splitlines():
        match = re.match(r"\s*\d+\.\s+(.*)", line)
        if match:
            items.append(f"<li>{_inline(match.group(1))}</li>")
        elif items:  # a wrapped list item
            items[-1] = items[-1][: -len("</li>")] + " " + _inline(line.strip()) + "</li>"
        else:
            paragraph.append(line.strip())
    return f"<p>{_inline(' '.join(paragraph))}</p><ol>{''.join(items)}</ol>"


def image_uri(path: Path) -> str:
    """The PNG as a data: URI, so the page needs no file beside it."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def cell(value: object, column: str, std: object = None) -> str:
    """One leaderboard cell as text: metrics to 4 decimals (± the spread over folds), counts as integers."""
    if _missing(value):
        return "-"
    if column == "gap":
        return f"{float(value):+.4f}"  # type: ignore[arg-type]
    if column in ("val_accuracy", "val_auc", "holdout_auc"):
        text = f"{float(value):.4f}"  # type: ignore[arg-type]
        return text + (f" ± {float(std):.4f}" if not _missing(std) else "")  # type: ignore[arg-type]
    if column in ("rank", "parameters", "epochs"):
        return f"{int(value):,}"  # type: ignore[call-overload]
    if column == "seconds":
        return f"{float(value):,.1f}"  # type: ignore[arg-type]
    return str(value)


def budget_codes(budgets: pd.Series) -> dict[str, str]:
    """A letter per distinct budget, in ranking order (A is the top run's): the table shows letters, a key the words."""
    distinct = list(dict.fromkeys(b for b in budgets if isinstance(b, str)))
    return {b: chr(ord("A") + i) if i < 26 else str(i + 1) for i, b in enumerate(distinct)}


def _leaderboard(frame: pd.DataFrame, compared: str | None) -> str:
    codes = budget_codes(frame["budget"]) if "budget" in frame else {}
    at = [key for key, _ in COLUMNS].index("val_auc") + 1
    columns = (*COLUMNS[:at], *(HELD if "holdout_auc" in frame else ()), *COLUMNS[at:])
    head = "".join(
        f'<th class="{"num" if key in NUMERIC else ""}" data-col="{key}">{html.escape(name)}</th>'
        for key, name in columns
    )
    rows = []
    for _, row in frame.iterrows():
        ranked = not _missing(row["rank"])
        css = "top" if ranked and int(row["rank"]) == 1 else ("" if ranked else "unranked")
        cells = []
        for key, _name in columns:
            kind = "num" if key in NUMERIC else key if key in ("run", "budget", "val_set") else ""
            text = cell(row.get(key), key, row.get(f"{key}_std"))
            hover = row.get("error") if key == "status" else row.get("budget") if key == "budget" else None
            title = "" if _missing(hover) else f' title="{html.escape(str(hover))}"'  # why it failed; the budget
            if key == "budget" and text in codes:
                kind += " compared" if text == compared else ""
                text = codes[text]
            cells.append(f'<td class="{kind}" data-col="{key}"{title}>{html.escape(text)}</td>')
        rows.append(f'<tr class="{css}" data-run="{html.escape(str(row["run"]))}">{"".join(cells)}</tr>')
    key = "".join(
        f"<dt>{code}</dt><dd>{html.escape(budget)}{' (the budget the verdict compares)' if budget == compared else ''}"
        "</dd>"
        for budget, code in codes.items()
    )
    table = f'<table id="leaderboard"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    return table + (f'<dl class="budgets" id="budgets">{key}</dl>' if key else "")


def _figure(figure: Figure, level: str = "h3") -> str:
    alt = html.escape(figure.heading)
    caption = f"<figcaption>{_inline(figure.caption)}</figcaption>" if figure.caption else ""
    return (
        f"<{level}>{html.escape(figure.heading)}</{level}>"
        f'<figure><img alt="{alt}" src="{image_uri(figure.path)}">{caption}</figure>'
    )


def render(page: Page) -> str:
    """The page as one HTML string: no external file, script, font or network request."""
    verdict_class = VERDICT_CLASSES.get(page.verdict, "")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>harness: {html.escape(page.title)}</title>",
        f"<style>{CSS}</style></head><body><main>",
        f"<h1>{html.escape(page.title)}</h1>",
        f'<p class="meta">{_inline(page.scope)}</p>',
    ]
    if page.synthetic:
        parts.append(
            '<div class="banner"><strong>Synthetic demo data.</strong> '
            "These scores say nothing about cancer detection.</div>"
        )
    parts += [
        "<h2>Verdict: does a bigger network do better?</h2>",
        f'<div class="verdict {verdict_class}" id="verdict">',
        f'<p class="sentence">{_inline(page.verdict_sentence)}</p>',
        f"<p>{_inline(page.verdict_detail)}</p>" if page.verdict_detail else "",
        f"<details><summary>How the verdict is decided</summary>{_rule(page.rule)}</details>",
        "</div>",
        "<h2>Leaderboard</h2>",
        f'<p class="meta">{_inline(page.ranking)}</p>',
        _leaderboard(page.leaderboard, page.compared_budget),
        *(f'<p class="note">{_inline(note)}</p>' for note in page.notes),
    ]
    if page.figures:
        parts.append("<h2>Plots</h2>")
        parts += [_figure(f) for f in page.figures]
    parts.append("<h2>Learning curves of the top runs</h2>")
    if page.curves:
        parts += [_figure(f) for f in page.curves]
    else:
        parts.append("<p>No ranked run has a learning curve (ensembles train nothing).</p>")
    parts += [f"<footer>Written by <code>harness report --html</code> {html.escape(page.written)}.</footer>"]
    parts.append("</main></body></html>")
    return "\n".join(p for p in parts if p) + "\n"


def write_page(page: Page, path: Path) -> Path:
    """Write the page atomically; return its path."""
    write_text(path, render(page))
    return path
