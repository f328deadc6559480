"""The page shell of every tuner report: a `Page` of cards and `Section`s rendered to one HTML file.

The study report, the retrain page and the visualize page are all a `Page`. plotly.js is
embedded once in <head>, so a page opens offline and can be mailed around. Every piece of text
on a page is plain text here and goes through `html.escape` when rendered (study names, class
names, parameter values, notes); Plotly escapes its own JSON for <script>.
"""

from __future__ import annotations

import datetime
import html
from dataclasses import dataclass
from string import Template

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from tuner.report.data import Table

PLOT_CONFIG = {"displaylogo": False, "responsive": True}
MARGIN = {"t": 60, "r": 30, "b": 50, "l": 60}  # px, for figures that set no margin themselves
DEFAULT_HEIGHT = 450  # px, for figures that set no height themselves


@dataclass(frozen=True)
class Card:
    """A summary card: a label, a big value, and small detail lines joined by " · "."""

    label: str
    value: str
    details: tuple[str, ...] = ()


@dataclass(frozen=True)
class Section:
    """A titled part of a page: how to read it, then a table and/or figures, then notes."""

    anchor: str
    title: str
    how_to_read: str
    figures: tuple[go.Figure, ...] = ()
    table: Table | None = None
    highlight: int | None = None  # the table row (key) marked as the best
    notes: tuple[str, ...] = ()  # shown below, one line each (why a plot is missing, caveats)
    columns: int | None = None  # figures side by side; None: two when there are two, else one


@dataclass(frozen=True)
class Page:
    """A whole page: title, subtitle, summary cards, an optional banner, sections, footer."""

    title: str
    subtitle: str
    sections: tuple[Section, ...]
    cards: tuple[Card, ...] = ()
    banner: str = ""  # a highlighted line under the cards (e.g. "no trial has finished yet")
    nav: bool = False  # links to the sections under the header
    footer: str = ""
    browser_title: str = ""  # the <title>; the page title when empty


CSS = """
:root { --ink: #1f2933; --muted: #616e7c; --line: #e4e7eb; --accent: #4c78a8; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--ink); background: #f5f7fa; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 24px 64px; }
h1 { margin: 0 0 2px; font-size: 26px; word-break: break-word; }
.subtitle { color: var(--muted); margin: 0 0 18px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); gap: 12px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; }
.card .label { color: var(--muted); font-size: 12px; text-transform: uppercase;
               letter-spacing: .04em; }
.card .value { font-size: 22px; font-weight: 600; overflow-wrap: anywhere; }
.card .detail { color: var(--muted); font-size: 13px; }
.detail span { display: inline-block; max-width: 100%; overflow-wrap: anywhere; }
.banner { background: #fff8e1; border: 1px solid #f0d58c; border-radius: 8px;
          padding: 12px 16px; margin: 18px 0 0; font-size: 16px; }
nav { margin: 18px 0 0; font-size: 14px; }
nav a { color: var(--accent); margin-right: 14px; text-decoration: none; white-space: nowrap; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px;
          padding: 16px 20px; margin-top: 20px; }
section h2 { margin: 0 0 2px; font-size: 19px; }
.how { color: var(--muted); margin: 0 0 10px; }
.note { color: #8a5a00; background: #fff8e1; border-radius: 6px; padding: 6px 10px;
        margin: 8px 0 0; font-size: 14px; }
.figures { display: grid; grid-template-columns: minmax(0, 1fr); gap: 12px; }
.figures.cols-2 { grid-template-columns: repeat(2, minmax(0, 1fr)); }
@media (max-width: 900px) { .figures.cols-2 { grid-template-columns: minmax(0, 1fr); } }
.figure { overflow-x: auto; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13.5px; width: 100%;
        font-variant-numeric: tabular-nums; }
th, td { padding: 5px 8px; border-bottom: 1px solid var(--line); text-align: right;
         white-space: nowrap; }
th { background: #f0f4f8; font-weight: 600; position: sticky; top: 0; }
th:first-child, td:first-child { text-align: left; }
tbody tr:hover { background: #f5f9ff; }
tr.best { background: #eef6ee; font-weight: 600; }
.pin { position: sticky; background: #fff; z-index: 1; }
th.pin { background: #f0f4f8; z-index: 2; }
tr.best .pin { background: #eef6ee; }
.pin-0 { left: 0; min-width: 4.5em; max-width: 4.5em; }
.pin-1 { left: 4.5em; box-shadow: 1px 0 0 var(--line); }
footer { color: var(--muted); font-size: 13px; margin-top: 28px; }
"""

DOCUMENT = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>$css</style>
<script>$plotlyjs</script>
</head>
<body>
<main>
$body
</main>
</body>
</html>
""")


def render(page: Page) -> str:
    """The whole page as one self-contained HTML string, plotly.js included once."""
    cards = "\n".join(card_html(card) for card in page.cards)
    banner = f'<p class="banner">{html.escape(page.banner)}</p>' if page.banner else ""
    nav = ""
    if page.nav:
        links = " ".join(
            f'<a href="#{html.escape(s.anchor)}">{html.escape(s.title)}</a>' for s in page.sections
        )
        nav = f"<nav>{links}</nav>"
    header = (
        f"<header><h1>{html.escape(page.title)}</h1>"
        f'<p class="subtitle">{html.escape(page.subtitle)}</p>'
        + (f'<div class="cards">{cards}</div>' if cards else "")
        + f"{banner}{nav}</header>"
    )
    sections = "\n".join(section_html(section) for section in page.sections)
    footer = f"\n<footer>{html.escape(page.footer)}</footer>" if page.footer else ""
    return DOCUMENT.substitute(
        title=html.escape(page.browser_title or page.title),
        css=CSS,
        plotlyjs=get_plotlyjs(),
        body=f"{header}\n{sections}{footer}",
    )


def generated_line() -> str:
    """The footer of a generated page: when, and how to use its interactive plots."""
    generated = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return (
        f"Generated by tuner on {generated}. Plots are interactive: hover for values, "
        "drag to zoom, double-click to reset."
    )


def card_html(card: Card) -> str:
    """A summary card; each detail is its own unbreakable span."""
    details = " · ".join(f"<span>{html.escape(detail)}</span>" for detail in card.details)
    return (
        f'<div class="card"><div class="label">{html.escape(card.label)}</div>'
        f'<div class="value">{html.escape(card.value)}</div>'
        + (f'<div class="detail">{details}</div>' if details else "")
        + "</div>"
    )


def section_html(section: Section) -> str:
    """A titled section: the how-to-read line, its table, its figures, then its notes."""
    body = ""
    if section.table is not None:
        body += table_html(section.table, section.highlight)
    if section.figures:
        columns = section.columns or (2 if len(section.figures) == 2 else 1)
        body += figures_html(section.figures, section.anchor, columns)
    body += "".join(f'<p class="note">{html.escape(note)}</p>' for note in section.notes)
    return (
        f'<section id="{html.escape(section.anchor)}"><h2>{html.escape(section.title)}</h2>'
        f'<p class="how">{html.escape(section.how_to_read)}</p>{body}</section>'
    )


def table_html(table: Table, highlight: int | None = None) -> str:
    """An escaped HTML table; the row whose key is `highlight` is marked as the best."""

    def pin(column: int) -> str:
        return f' class="pin pin-{column}"' if column < table.pinned else ""

    head = "".join(
        f"<th{pin(column)}>{html.escape(header)}</th>"
        for column, header in enumerate(table.headers)
    )
    rows = []
    for key, cells in zip(table.keys, table.rows, strict=True):
        css = ' class="best"' if key == highlight else ""
        tds = "".join(
            f"<td{pin(column)}>{html.escape(cell)}</td>" for column, cell in enumerate(cells)
        )
        rows.append(f'<tr data-trial="{key}"{css}>{tds}</tr>')
    return (
        f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def figures_html(figures: tuple[go.Figure, ...], id_prefix: str, columns: int = 1) -> str:
    """Figures in a grid of `columns` (one per row on narrow screens), without plotly.js.

    The figures' <div>s are `{id_prefix}-1`, `{id_prefix}-2`, ...
    """
    divs = "".join(
        f'<div class="figure">{figure_html(figure, f"{id_prefix}-{index}")}</div>'
        for index, figure in enumerate(figures, start=1)
    )
    # The grid is fixed before the figures draw: plotly sizes a plot once, to its container.
    return f'<div class="figures cols-{columns}">{divs}</div>'


def figure_html(figure: go.Figure, div_id: str) -> str:
    """One figure as a <div> and the <script> that draws it (plotly.js not included)."""
    figure.update_layout(template="plotly_white")
    if all(getattr(figure.layout.margin, side) is None for side in "trbl"):
        figure.update_layout(margin=MARGIN)
    if figure.layout.height is None:
        figure.update_layout(height=DEFAULT_HEIGHT)
    return pio.to_html(
        figure, full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG
    )
