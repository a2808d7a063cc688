"""Standalone HTML pages: one per benchmark (sortable table, embedded plots) and an index.

Pages load nothing from the network: styles and the sort script are inline and the figures
are embedded as base64 PNG data URLs. Clicking a column header sorts the measured rows and
the reported rows, each within its own section, by that column (again: reverse order);
empty cells always sort last.
"""

from __future__ import annotations

import base64
import math
from html import escape

from fscil_bench.reporting.provenance import Provenance, as_items
from fscil_bench.reporting.side_tables import SideTable
from fscil_bench.reporting.tables import (
    COMPARISON_TITLES,
    TIE_TITLES,
    Cell,
    Table,
    TableRow,
    comparison_texts,
)

STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:1.5em;color:#1f2328;background:#fff}
table{border-collapse:collapse;font-size:13px}
th,td{border:1px solid #d0d7de;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#f6f8fa;cursor:pointer;user-select:none;position:sticky;top:0}
th[aria-sort=ascending]::after{content:' \\25B2'} th[aria-sort=descending]::after{content:' \\25BC'}
td.text,th.text{text-align:left} td.notes{white-space:normal;min-width:14em;text-align:left}
td.best{font-weight:bold;background:#dafbe1}
tbody.reported td{background:#fff8c5;font-style:italic}
tr.section td{background:#eaeef2;font-weight:bold;font-style:normal;text-align:left}
tr.oracle td{color:#57606a}
.scroll{overflow-x:auto;max-width:100%}
img{max-width:100%;border:1px solid #d0d7de;margin:0.5em 0}
.legend{color:#57606a;font-size:13px;max-width:70em}
code{background:#f6f8fa;padding:1px 4px}
"""

# Sorts every <tbody> of a table.sortable on a header click; rows with class "section" stay on top.
SORT_SCRIPT = """
(function(){
  function key(row, col){
    var cell = row.cells[col]; if(!cell) return null;
    var v = cell.getAttribute('data-v'); if(v === null) v = cell.textContent;
    if(v === '') return null;
    var x = Number(v); return isNaN(x) ? v.toLowerCase() : x;
  }
  function compare(a, b, dir){
    if(a === null) return b === null ? 0 : 1;
    if(b === null) return -1;
    if(typeof a !== typeof b){ a = String(a); b = String(b); }
    return dir * (a < b ? -1 : a > b ? 1 : 0);
  }
  var tables = document.querySelectorAll('table.sortable');
  Array.prototype.forEach.call(tables, function(table){
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function(th, col){
      th.addEventListener('click', function(){
        var dir = th.getAttribute('aria-sort') === 'ascending' ? -1 : 1;
        Array.prototype.forEach.call(heads, function(h){ h.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', dir === 1 ? 'ascending' : 'descending');
        Array.prototype.forEach.call(table.tBodies, function(body){
          var rows = Array.prototype.filter.call(body.rows, function(r){ return !r.classList.contains('section'); });
          rows.sort(function(a, b){ return compare(key(a, col), key(b, col), dir); });
          rows.forEach(function(r){ body.appendChild(r); });
        });
      });
    });
    table.setAttribute('data-sortable', 'ready');
  });
})();
"""


def _num(value: float) -> str:
    return "" if math.isnan(value) else repr(round(value, 6))


def _td(text: str, sort_value: str | None = None, css: str = "") -> str:
    attrs = f' class="{css}"' if css else ""
    if sort_value is not None:
        attrs += f' data-v="{escape(sort_value)}"'
    return f"<td{attrs}>{escape(text)}</td>"


def _row(table: Table, row: TableRow) -> str:
    cells = [_td(row.method, css="text"), _td(row.preset, css="text"),
             _td("" if row.n is None else str(row.n), "" if row.n is None else str(row.n))]
    for c in table.columns:
        cell = row.cells.get(c.key, Cell())
        cells.append(_td(cell.text(c), _num(cell.mean), "best" if cell.best else ""))
    cells += [_td(row.ties.get(k, "")) for k in table.ties]
    if table.has_comparison:
        comp = row.comparison
        texts = comparison_texts(row) if row.kind == "measured" else ["", "", ""]
        keys = [_num(comp.delta_last), _num(comp.delta_avg), texts[2]] if comp else ["", "", texts[2]]
        cells += [_td(t, k) for t, k in zip(texts, keys)]
    cells.append(_td(row.notes(), css="notes"))
    css = ' class="oracle"' if row.oracle else ""
    return f"<tr{css}>" + "".join(cells) + "</tr>"


def table_html(table: Table) -> str:
    headers = ["Method", "Preset", "n"] + [c.title for c in table.columns] + [TIE_TITLES[k] for k in table.ties]
    headers += list(COMPARISON_TITLES) if table.has_comparison else []
    headers.append("Notes")
    head = "".join(f'<th class="text">{escape(h)}</th>' if h in ("Method", "Preset", "Notes") else f"<th>{escape(h)}</th>"
                   for h in headers)
    parts = ['<div class="scroll">', f'<table class="sortable" id="leaderboard"><thead><tr>{head}</tr></thead>',
             '<tbody class="measured">' + "".join(_row(table, r) for r in table.measured) + "</tbody>"]
    if table.reported:
        section = f'<tr class="section"><td colspan="{len(headers)}">reported (published numbers, not measured here)</td></tr>'
        parts.append('<tbody class="reported">' + section + "".join(_row(table, r) for r in table.reported) + "</tbody>")
    parts.append("</table></div>")
    return "\n".join(parts)


def side_table_html(side: SideTable) -> str:
    """A side table as a sortable table (text columns sort as text, numbers by their value)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in side.headers)
    body = "".join("<tr>" + "".join(_td(text, None if value is None else _num(value), "" if value is not None else "text")
                                    for text, value in zip(texts, values)) + "</tr>"
                   for texts, values in zip(side.rows, side.sort_values))
    return (f'<h2 id="{escape(side.anchor)}">{escape(side.title)}</h2>\n<div class="scroll"><table class="sortable">'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>\n"
            '<div class="legend">' + "".join(f"<p>{escape(p)}</p>" for p in side.legend) + "</div>")


def _img(title: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<figure><img alt="{escape(title)}" title="{escape(title)}" src="data:image/png;base64,{data}"><figcaption>{escape(title)}</figcaption></figure>'


def page(table: Table, legend: list[str], figures: list[tuple[str, bytes]], definitions: dict[str, str],
         provenance: Provenance, sides: list[SideTable] | None = None) -> str:
    """The standalone page of one benchmark."""
    body = [f"<h1>{escape(table.benchmark)}</h1>", '<p><a href="index.html">all benchmarks</a></p>',
            table_html(table), '<div class="legend">' + "".join(f"<p>{escape(p)}</p>" for p in legend) + "</div>"]
    body += [side_table_html(side) for side in sides or []]
    if figures:
        body.append("<h2>Plots</h2>")
        body += [_img(title, png) for title, png in figures]
    body.append("<h2>Definitions</h2><ul>")
    body += [f"<li><b>{escape(k)}</b>: {escape(v)}</li>" for k, v in definitions.items()]
    body.append("</ul><h2>Provenance</h2><ul>")
    for label, values in as_items(provenance):
        body.append(f"<li>{escape(label)}: " + "; ".join(f"<code>{escape(v)}</code>" for v in values) + "</li>")
    body.append("</ul>")
    return _document(f"{table.benchmark} leaderboard", "\n".join(body))


def index_page(entries: list[tuple[str, str, str]]) -> str:
    """Links to every benchmark page: (benchmark id, file name, one-line summary)."""
    items = "".join(f'<li><a href="{escape(href)}">{escape(bench)}</a>: {escape(summary)}</li>'
                    for bench, href, summary in entries)
    return _document("fscil-bench leaderboards", f"<h1>fscil-bench leaderboards</h1><ul>{items}</ul>")


def _document(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>\n{body}\n<script>{SORT_SCRIPT}</script></body></html>\n")

