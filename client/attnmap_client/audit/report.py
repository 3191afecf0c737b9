"""``report.html``: one self-contained file (inline CSS, SVG and script; no CDN, no network).

Every value that reaches the page goes through :func:`html.escape`; images are data URLs.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from attnmap_client.audit.stats import histogram

Record = dict[str, Any]
PALETTE = ("#3b6fb6", "#d1495b", "#2e933c", "#8d5fd3")

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d232b;background:#fafbfc}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d8dde3;padding-bottom:4px}
.run{color:#4a5563;margin:0 0 12px} .run code{background:#eef1f4;padding:1px 4px;border-radius:3px}
.verdict{display:inline-block;padding:4px 10px;border-radius:4px;font-weight:600;margin:4px 8px 4px 0}
.pass{background:#dff3e2;color:#175c24} .fail{background:#fbe0e2;color:#8a1621} .partial{background:#fff2cc;color:#6b5200}
table{border-collapse:collapse;background:#fff} th,td{padding:4px 8px;border:1px solid #dfe3e8;text-align:left}
th{background:#f0f3f6;white-space:nowrap} td.num{text-align:right;font-variant-numeric:tabular-nums}
table.sortable th{cursor:pointer;user-select:none} table.sortable th[aria-sort=ascending]::after{content:" \\25B2"}
table.sortable th[aria-sort=descending]::after{content:" \\25BC"}
.charts{display:flex;flex-wrap:wrap;gap:16px} .chart{background:#fff;border:1px solid #dfe3e8;padding:8px}
.chart h3{font-size:14px;margin:0 0 4px}
.offenders{display:flex;flex-wrap:wrap;gap:24px} .offender-column{min-width:260px}
figure.offender{margin:0 0 12px;background:#fff;border:1px solid #dfe3e8;padding:6px;display:inline-block}
figure.offender .pair{display:flex;gap:6px} figure.offender .pane{text-align:center;font-size:12px;color:#4a5563}
img.thumb{width:128px;height:128px;object-fit:contain;image-rendering:pixelated;display:block;background:#000}
figcaption{font-size:12px;margin-top:4px;max-width:420px;word-break:break-all}
.err{color:#8a1621} .muted{color:#6b7685}
.scroll{max-height:560px;overflow:auto;border:1px solid #dfe3e8}
"""

# Sorting by clicking a header: numbers numerically (data-v holds the raw value), text as text.
_SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, column) {
    th.addEventListener('click', function () {
      var ascending = th.getAttribute('aria-sort') !== 'ascending';
      table.querySelectorAll('th').forEach(function (other) { other.removeAttribute('aria-sort'); });
      th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[column].getAttribute('data-v'), y = b.cells[column].getAttribute('data-v');
        var nx = parseFloat(x), ny = parseFloat(y), order;
        if (x === '' && y === '') order = 0; else if (x === '') order = 1; else if (y === '') order = -1;
        else if (!isNaN(nx) && !isNaN(ny)) order = nx - ny; else order = x < y ? -1 : x > y ? 1 : 0;
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
document.documentElement.setAttribute('data-ready', 'true');
"""


def esc(value: object) -> str:
    """HTML-escape anything as text."""
    return html.escape("" if value is None else str(value), quote=True)


def fmt(value: object, digits: int = 3) -> str:
    """A number for a table cell (``-`` for none)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def data_url(data: bytes, mime: str) -> str:
    """Bytes as a ``data:`` URL."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def mime_of(data: bytes) -> str:
    """MIME type of an image from its magic bytes (PNG when unknown)."""
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "image/png"


def _cell(value: object, digits: int = 3) -> str:
    raw = "" if value is None else (repr(value) if isinstance(value, float) else str(value))
    css = ' class="num"' if isinstance(value, int | float) and not isinstance(value, bool) else ""
    return f'<td{css} data-v="{esc(raw)}">{esc(fmt(value, digits))}</td>'


def histogram_svg(values: Sequence[float], title: str, color: str, threshold: float | None = None,
                  bins: int = 20, width: int = 360, height: int = 200, axis_label: str = "region mass",
                  high: float = 1.0) -> str:
    """A histogram of values in [0, high] as inline SVG, with the gate threshold as a dashed line."""
    counts = histogram(values, bins, 0.0, high)
    top = max(counts) if counts and max(counts) > 0 else 1
    left, bottom, right, upper = 36, 34, 16, 10
    plot_w, plot_h = width - left - right, height - bottom - upper
    bar_w = plot_w / bins
    parts = [f'<svg class="histogram" role="img" aria-label="{esc(title)}" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}">']
    for index, count in enumerate(counts):
        h = plot_h * count / top
        x = left + index * bar_w
        parts.append(f'<rect x="{x + 1:.1f}" y="{upper + plot_h - h:.1f}" width="{bar_w - 2:.1f}" height="{h:.1f}" '
                     f'fill="{color}"><title>{high * index / bins:.3g}-{high * (index + 1) / bins:.3g}: {count}</title></rect>')
    parts.append(f'<line x1="{left}" y1="{upper + plot_h}" x2="{left + plot_w}" y2="{upper + plot_h}" stroke="#333"/>')
    parts.append(f'<line x1="{left}" y1="{upper}" x2="{left}" y2="{upper + plot_h}" stroke="#333"/>')
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0) if high == 1.0 else (0.0, 0.5, 1.0):
        x = left + plot_w * tick
        parts.append(f'<text x="{x:.1f}" y="{upper + plot_h + 14}" font-size="11" text-anchor="middle">{high * tick:.3g}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" font-size="11" text-anchor="middle">'
                 f'{esc(axis_label)}</text>')
    parts.append(f'<text x="{left - 6}" y="{upper + 8}" font-size="11" text-anchor="end">{top}</text>')
    parts.append(f'<text x="{left - 6}" y="{upper + plot_h}" font-size="11" text-anchor="end">0</text>')
    if threshold is not None and 0.0 <= threshold <= high:
        x = left + plot_w * threshold / high
        parts.append(f'<line x1="{x:.1f}" y1="{upper}" x2="{x:.1f}" y2="{upper + plot_h}" stroke="#111" '
                     f'stroke-dasharray="4 3"><title>gate threshold {threshold:g}</title></line>')
    parts.append("</svg>")
    return "".join(parts)


def layer_plot_svg(layers: Sequence[Mapping[str, Any]], title: str, color: str, width: int = 420,
                   height: int = 220) -> str:
    """Per-layer mean (line) with the 10th-90th percentile band and +-1 std whiskers, as inline SVG."""
    left, bottom, right, upper = 44, 34, 10, 10
    plot_w, plot_h = width - left - right, height - bottom - upper
    tops = [float(entry.get("p90") or 0.0) for entry in layers] + [
        float(entry.get("mean") or 0.0) + float(entry.get("std") or 0.0) for entry in layers]
    top = max([*tops, 1e-6]) * 1.1
    count = max(len(layers), 1)

    def x(index: int) -> float:
        return left + (plot_w * (index + 0.5) / count)

    def y(value: float) -> float:
        return upper + plot_h - plot_h * max(0.0, value) / top

    parts = [f'<svg class="layer-plot" role="img" aria-label="{esc(title)}" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}">']
    if layers:
        band = [f"{x(i):.1f},{y(float(e['p90'] or 0)):.1f}" for i, e in enumerate(layers)]
        band += [f"{x(i):.1f},{y(float(e['p10'] or 0)):.1f}" for i, e in reversed(list(enumerate(layers)))]
        parts.append(f'<polygon points="{" ".join(band)}" fill="{color}" fill-opacity="0.18"/>')
        for i, e in enumerate(layers):
            mean, std = float(e["mean"] or 0), float(e["std"] or 0)
            parts.append(f'<line x1="{x(i):.1f}" y1="{y(mean - std):.1f}" x2="{x(i):.1f}" y2="{y(mean + std):.1f}" '
                         f'stroke="{color}" stroke-width="1"/>')
        line = " ".join(f"{x(i):.1f},{y(float(e['mean'] or 0)):.1f}" for i, e in enumerate(layers))
        parts.append(f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="2"/>')
        for i, e in enumerate(layers):
            parts.append(f'<circle cx="{x(i):.1f}" cy="{y(float(e["mean"] or 0)):.1f}" r="3" fill="{color}">'
                         f'<title>layer {esc(e["layer"])}: mean {fmt(e["mean"], 4)}, std {fmt(e["std"], 4)}, '
                         f'p10 {fmt(e["p10"], 4)}, p90 {fmt(e["p90"], 4)}</title></circle>')
            parts.append(f'<text x="{x(i):.1f}" y="{upper + plot_h + 14}" font-size="11" text-anchor="middle">'
                         f'{esc(e["layer"])}</text>')
    parts.append(f'<line x1="{left}" y1="{upper + plot_h}" x2="{left + plot_w}" y2="{upper + plot_h}" stroke="#333"/>')
    parts.append(f'<line x1="{left}" y1="{upper}" x2="{left}" y2="{upper + plot_h}" stroke="#333"/>')
    parts.append(f'<text x="{left - 6}" y="{upper + 8}" font-size="11" text-anchor="end">{top:.2g}</text>')
    parts.append(f'<text x="{left - 6}" y="{upper + plot_h}" font-size="11" text-anchor="end">0</text>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" font-size="11" text-anchor="middle">'
                 f'layer (line: mean; band: p10-p90; bars: ±1 std)</text>')
    parts.append("</svg>")
    return "".join(parts)


def sparkline_svg(values: Sequence[float], color: str, width: int = 120, height: int = 28) -> str:
    """A tiny per-layer line for one sentence."""
    if not values:
        return ""
    top = max(max(values), 1e-6)
    step = width / max(len(values) - 1, 1)
    points = " ".join(f"{i * step:.1f},{height - 2 - (height - 4) * v / top:.1f}" for i, v in enumerate(values))
    return (f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'xmlns="http://www.w3.org/2000/svg"><polyline points="{points}" fill="none" stroke="{color}" '
            f'stroke-width="1.5"/></svg>')


def _page(title: str, body: str) -> str:
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{esc(title)}</title><style>{_STYLE}</style></head><body>{body}'
            f'<script>{_SCRIPT}</script></body></html>\n')


def _run_header(summary: Mapping[str, Any], title: str) -> str:
    run = summary["run"]
    parts = [f"<h1>{esc(title)}</h1>", '<p class="run">']
    parts.append(f"models {', '.join(f'<code>{esc(m)}</code>' for m in run['models'])}; ")
    parts.append(f"method <code>{esc(run.get('method') or 'attention')}</code>; ")
    if run.get("region") is not None:
        parts.append(f"region (fractions) <code>{esc(','.join(f'{v:g}' for v in run['region']))}</code>; ")
    if run.get("boxes"):
        parts.append(f"boxes <code>{esc(run['boxes'])}</code>; ")
    parts.append(f"servers {', '.join(f'<code>{esc(s)}</code>' for s in run['servers'])}; ")
    parts.append(f"started {esc(run.get('started'))}, {esc(fmt(run.get('duration_s'), 1))} s.</p>")
    if not summary.get("complete"):
        parts.append('<span class="verdict partial">partial: the run was interrupted</span>')
    gate = summary.get("gate")
    if gate:
        for model, verdict in gate["models"].items():
            css = "fail" if verdict["failed"] else "pass"
            share = verdict["share"]
            parts.append(f'<span class="verdict {css}" data-model="{esc(model)}">{esc(model)}: gate '
                         f'{"FAILED" if verdict["failed"] else "passed"} ({verdict["count"]} '
                         f'{esc(verdict["direction"])} {verdict["threshold"]:g}, share {fmt(share)} vs max '
                         f'{verdict["max_share"]:g})</span>')
    return "".join(parts)


def _aggregate_table(aggregate: Mapping[str, Mapping[str, Any]], names: Sequence[tuple[str, str]]) -> str:
    head = "".join(f"<th>{esc(label)}</th>" for _key, label in names)
    rows = []
    for model, entry in aggregate.items():
        cells = "".join(f'<td class="num">{esc(fmt(entry.get(key)))}</td>' for key, _label in names)
        rows.append(f"<tr><th>{esc(model)}</th>{cells}</tr>")
        for group, stats in (entry.get("groups") or {}).items():
            cells = "".join(f'<td class="num">{esc(fmt(stats.get(key)))}</td>' for key, _label in names)
            rows.append(f'<tr class="group"><td>&nbsp;&nbsp;{esc(group)}/</td>{cells}</tr>')
    return f'<table class="aggregate"><thead><tr><th>model</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def image_report(summary: Mapping[str, Any], thumbnails: Mapping[str, Mapping[str, str]],
                 offenders: Mapping[str, Sequence[Record]]) -> str:
    """The image audit's page: verdicts, histograms, worst offenders (original beside overlays), the table."""
    models: list[str] = list(summary["run"]["models"])
    records: list[Record] = summary["images"]
    gate = summary.get("gate")
    threshold = gate["fail_above"] if gate else None
    body = [_run_header(summary, "attnmap audit: attention inside the region")]
    body.append("<h2>Summary</h2>")
    body.append(_aggregate_table(summary["aggregate"], [
        ("count", "images"), ("errors", "errors"), ("mean", "mean"), ("median", "median"), ("p90", "p90"),
        ("max", "max"), ("area_share_mean", "region area (chance)"), ("share_above", "share above threshold")]))
    body.append('<h2>Distribution of region mass</h2><div class="charts">')
    for index, model in enumerate(models):
        masses = [float(r["region_mass"]) for r in records
                  if r["model"] == model and not r.get("error") and r.get("region_mass") is not None]
        body.append(f'<div class="chart"><h3>{esc(model)}</h3>'
                    f'{histogram_svg(masses, model, PALETTE[index % len(PALETTE)], threshold)}</div>')
    body.append("</div>")

    body.append('<h2>Worst offenders</h2><p class="muted">The images with the most attention inside the region, '
                'each original beside the overlay of every model (the region outlined).</p><div class="offenders">')
    by_key = {(r["model"], r["path"]): r for r in records}
    for model in models:
        body.append(f'<div class="offender-column" data-model="{esc(model)}"><h3>{esc(model)}</h3>')
        for record in offenders.get(model, ()):
            thumbs = thumbnails.get(record["path"], {})
            panes = [f'<div class="pane"><img class="thumb original" alt="original" src="{esc(thumbs.get("original", ""))}">'
                     f"original</div>"]
            for other in models:
                mass = (by_key.get((other, record["path"])) or {}).get("region_mass")
                panes.append(f'<div class="pane"><img class="thumb overlay" alt="overlay {esc(other)}" '
                             f'src="{esc(thumbs.get(other, ""))}">{esc(other)}<br>{esc(fmt(mass))}</div>')
            body.append(f'<figure class="offender"><div class="pair">{"".join(panes)}</div>'
                        f'<figcaption>{esc(record["path"])}; {esc(model)} predicts {esc(record.get("prediction"))}</figcaption></figure>')
        body.append("</div>")
    body.append("</div>")

    body.append('<h2>Every image</h2><p class="muted">Click a column to sort.</p><div class="scroll">'
                '<table class="sortable" id="images"><thead><tr><th>path</th><th>group</th><th>region area</th>')
    for model in models:
        body.append(f"<th>{esc(model)} mass</th><th>{esc(model)} predicted</th>")
    body.append("<th>errors</th></tr></thead><tbody>")
    paths = sorted({r["path"] for r in records})
    for path in paths:
        row = [f"<td>{esc(path)}</td>"]
        first = next((by_key[(m, path)] for m in models if (m, path) in by_key), {})
        row.append(_cell(first.get("group")))
        row.append(_cell(next((by_key[(m, path)].get("area_share") for m in models
                               if (m, path) in by_key and by_key[(m, path)].get("area_share") is not None), None)))
        errors = []
        for model in models:
            record = by_key.get((model, path), {})
            row.append(_cell(record.get("region_mass")))
            row.append(_cell(record.get("prediction")))
            if record.get("error"):
                errors.append(f"{model}: {record['error']['code']}")
        row.append(f'<td class="err" data-v="{esc("; ".join(errors))}">{esc("; ".join(errors))}</td>')
        body.append(f"<tr>{''.join(row)}</tr>")
    body.append("</tbody></table></div>")
    return _page("attnmap audit", "".join(body))


def text_report(summary: Mapping[str, Any], weakest: Mapping[str, Sequence[Record]]) -> str:
    """The text audit's page: verdicts, per-layer plots, link histograms, weakest lines, the table."""
    models: list[str] = list(summary["run"]["models"])
    records: list[Record] = summary["lines"]
    gate = summary.get("gate")
    threshold = gate["fail_below"] if gate else None
    body = [_run_header(summary, "attnmap audit: query-to-key attention by layer")]
    body.append("<h2>Summary</h2>")
    body.append(_aggregate_table(summary["aggregate"], [
        ("count", "lines"), ("errors", "errors"), ("mean", "mean link"), ("median", "median"), ("p10", "p10"),
        ("min", "min"), ("share_below", "share below threshold")]))
    body.append('<h2>Per layer</h2><div class="charts">')
    for index, model in enumerate(models):
        layers = summary["aggregate"][model]["per_layer"]
        body.append(f'<div class="chart"><h3>{esc(model)}</h3>'
                    f'{layer_plot_svg(layers, model, PALETTE[index % len(PALETTE)])}</div>')
    body.append('</div><h2>Distribution of the link (mean over layers and heads)</h2><div class="charts">')
    for index, model in enumerate(models):
        links = [float(r["link"]) for r in records if r["model"] == model and not r.get("error") and r.get("link") is not None]
        # Links are attention weights, often far below 1: the axis ends at the next 0.05 above the largest.
        high = max(0.05, math.ceil(max([*links, threshold or 0.0]) / 0.05) * 0.05)
        body.append(f'<div class="chart"><h3>{esc(model)}</h3>'
                    f'{histogram_svg(links, model, PALETTE[index % len(PALETTE)], threshold, axis_label="link", high=high)}'
                    f"</div>")
    body.append("</div><h2>Weakest links</h2>")
    for index, model in enumerate(models):
        body.append(f'<h3>{esc(model)}</h3><table class="weakest"><thead><tr><th>line</th><th>text</th><th>query → key</th>'
                    f"<th>link</th><th>per layer</th></tr></thead><tbody>")
        for record in weakest.get(model, ()):
            body.append(f'<tr class="weak"><td class="num">{record["line"]}</td><td>{esc(record["text"])}</td>'
                        f'<td>{esc(record.get("query_token"))} → {esc(record.get("key_token"))}</td>'
                        f'<td class="num">{esc(fmt(record["link"], 4))}</td>'
                        f'<td>{sparkline_svg(record["per_layer"], PALETTE[index % len(PALETTE)])}</td></tr>')
        body.append("</tbody></table>")
    body.append('<h2>Every line</h2><p class="muted">Click a column to sort.</p><div class="scroll">'
                '<table class="sortable" id="lines"><thead><tr><th>line</th><th>model</th><th>text</th><th>query</th>'
                "<th>key</th><th>link</th><th>strongest layer</th><th>error</th></tr></thead><tbody>")
    for record in records:
        per_layer = record.get("per_layer") or []
        strongest = record["layers"][per_layer.index(max(per_layer))] if per_layer and record.get("layers") else None
        error = (record.get("error") or {}).get("code")
        body.append(f"<tr>{_cell(record['line'])}{_cell(record['model'])}{_cell(record['text'])}"
                    f"{_cell(record.get('query_token') or record.get('query'))}{_cell(record.get('key_token') or record.get('key'))}"
                    f"{_cell(record.get('link'), 4)}{_cell(strongest)}"
                    f'<td class="err" data-v="{esc(error)}">{esc(error)}</td></tr>')
    body.append("</tbody></table></div>")
    return _page("attnmap text audit", "".join(body))
