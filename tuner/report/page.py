"""Self-contained HTML pages of Plotly figures: `retrain` and `visualize` pages (`Page`), and
the pieces the study report (`tuner.report.html`) builds its page from.

plotly.js is embedded once in <head>, so a page opens offline and can be mailed around. Text
that comes from users (study names, class names, file names) goes through `html.escape`;
Plotly escapes its own JSON.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from string import Template

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

PLOT_CONFIG = {"displaylogo": False, "responsive": True}


@dataclass(frozen=True)
class Section:
    """A titled part of a page: a line on how to read it, and its figures (one per row)."""

    title: str
    how_to_read: str
    figures: tuple[go.Figure, ...]
    columns: int = 1  # figures side by side (one per row on narrow screens)


@dataclass(frozen=True)
class Page:
    """A page: a title, a subtitle, summary cards (label -> value) and sections."""

    title: str
    subtitle: str
    sections: tuple[Section, ...]
    cards: tuple[tuple[str, str], ...] = field(default_factory=tuple)


CSS = """
:root { --ink: #1f2933; --muted: #616e7c; --line: #e4e7eb; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--ink); background: #f5f7fa; }
main { max-width: 1340px; margin: 0 auto; padding: 24px 24px 48px; }
h1 { margin: 0 0 2px; font-size: 26px; word-break: break-word; }
.subtitle { color: var(--muted); margin: 0 0 16px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(160px, 1fr)); gap: 12px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; }
.card .label { color: var(--muted); font-size: 12px; text-transform: uppercase;
               letter-spacing: .04em; }
.card .value { font-size: 20px; font-weight: 600; overflow-wrap: anywhere; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px;
          padding: 14px 18px; margin-top: 18px; }
section h2 { margin: 0 0 2px; font-size: 19px; }
.how { color: var(--muted); margin: 0 0 8px; }
.figures { display: grid; grid-template-columns: minmax(0, 1fr); gap: 12px; }
.figures.cols-2 { grid-template-columns: repeat(2, minmax(0, 1fr)); }
@media (max-width: 900px) { .figures.cols-2 { grid-template-columns: minmax(0, 1fr); } }
.figure { overflow-x: auto; }
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
    """The whole page as one HTML string, plotly.js included."""
    cards = "".join(card_html(label, value) for label, value in page.cards)
    sections = "\n".join(
        section_html(
            section.title,
            section.how_to_read,
            figures_html(section.figures, f"figure-{number}", section.columns),
        )
        for number, section in enumerate(page.sections, start=1)
    )
    cards = f'<div class="cards">{cards}</div>' if cards else ""
    body = (
        f"<h1>{html.escape(page.title)}</h1>\n"
        f'<p class="subtitle">{html.escape(page.subtitle)}</p>\n{cards}\n{sections}'
    )
    return document(page.title, body)


def document(title: str, body: str, css: str = CSS) -> str:
    """A self-contained page: `title` is plain text, `body` is HTML for <main>.

    plotly.js is embedded once, in <head>, for every figure that `body` holds.
    """
    return DOCUMENT.substitute(
        title=html.escape(title), css=css, plotlyjs=get_plotlyjs(), body=body
    )


def card_html(label: str, value: str, detail: str | None = None) -> str:
    """A summary card; `label` and `value` are plain text, `detail` is HTML (none if None)."""
    detail_html = "" if detail is None else f'<div class="detail">{detail}</div>'
    return (
        f'<div class="card"><div class="label">{html.escape(label)}</div>'
        f'<div class="value">{html.escape(value)}</div>{detail_html}</div>'
    )


def section_html(title: str, how_to_read: str, body: str, anchor: str | None = None) -> str:
    """A titled section; `title` and `how_to_read` are plain text, `body` is HTML."""
    section_id = "" if anchor is None else f' id="{html.escape(anchor)}"'
    return (
        f"<section{section_id}><h2>{html.escape(title)}</h2>"
        f'<p class="how">{html.escape(how_to_read)}</p>{body}</section>'
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
    return pio.to_html(
        figure, full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG
    )
