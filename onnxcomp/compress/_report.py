"""Reports of a compress run: report.json (machine), report.md, report.html.

The HTML page is self-contained: inline CSS and inline SVG plots, no script,
no external resource (it is opened on machines without network). Plots:
params, MACs, file size, latency and fidelity per step; channels kept per
layer of each prune step; per-tensor quantization sensitivity; gate margins.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["render_html", "render_markdown", "write_report"]

_COLORS = ["#64748b", "#2563eb", "#0d9488", "#d97706", "#7c3aed", "#db2777", "#059669", "#dc2626"]
_PASS = "#16a34a"
_FAIL = "#dc2626"


# ------------------------------------------------------------------ format


def _count(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def _bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"  # pragma: no cover


def _num(x: Any, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:.{digits}g}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f} ms"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}x"


def _model_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The input and every step that produced a model."""
    return [s for s in data["steps"] if s["kind"] != "verify"]


# ------------------------------------------------------------------ JSON / MD


def _json_ready(obj: Any) -> Any:
    from onnxcomp.clikit import _clean, _default

    return _clean(json.loads(json.dumps(obj, default=_default)))


def render_markdown(data: dict[str, Any]) -> str:
    """The readable report."""
    lines = ["# onnxcomp compress report", ""]
    status = "PASSED" if data["passed"] else f"FAILED: {data['failure']}"
    lines += [
        f"- input: `{data['input']}`",
        f"- output: `{data['output'] or '(not written)'}`",
        f"- recipe: `{data['recipe']['path'] or '(text)'}`",
        f"- status: **{status}**",
        f"- time: {data['seconds']:.1f} s (work folder `{data['work_dir']}`)",
        "",
        "## Steps",
        "",
        "| step | status | params | MACs | size | latency | latency ratio | cosine | top-1 agree | accuracy |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in data["steps"]:
        m = s["metrics"]
        if s["kind"] == "verify":
            gates = ", ".join(
                f"{g['name']} {'PASS' if g['passed'] else 'FAIL'}" for g in s["gates"]
            )
            lines.append(f"| {s['name']} | {s['status']} | {gates} | | | | | | | |")
            continue
        lines.append(
            f"| {s['name']} | {s['status']} | {_num(m.get('params'))} | {_count(m.get('macs'))} | "
            f"{_bytes(m.get('size'))} | {_ms(m.get('latency_ms'))} | {_ratio(m.get('latency_ratio'))} | "
            f"{_num(m.get('cosine'), 6)} | {_pct(m.get('top1_agreement'))} | {_pct(m.get('accuracy'))} |"
        )
    gates = data["gates"]
    if gates:
        lines += [
            "",
            "## Gates",
            "",
            "| step | gate | value | threshold | margin | result |",
            "|---|---|---:|---:|---:|---|",
        ]
        for g in gates:
            lines.append(
                f"| {g['step']} | {g['name']} | {_num(g['value'], 6)} | {_num(g['threshold'], 6)} | "
                f"{_num(g['margin'], 4)} | {'PASS' if g['passed'] else '**FAIL**'} |"
            )
    for s in data["steps"]:
        if s["kind"] == "prune" and s["details"].get("plan"):
            layers = [c for c in s["details"]["plan"]["layers"] if c["before"] != c["after"]]
            lines += ["", f"## Pruning ({s['name']}): channels kept per layer", ""]
            lines += ["| layer | op | before | after | kept |", "|---|---|---:|---:|---:|"]
            for c in layers:
                lines.append(
                    f"| {c['node']} | {c['op_type']} | {c['before']} | {c['after']} | "
                    f"{c['after'] / max(c['before'], 1):.0%} |"
                )
        if s["kind"] == "quantize":
            d = s["details"]
            lines += ["", f"## Quantization ({s['name']})", ""]
            lines.append(
                f"{d.get('mode')} {d.get('format')} {d.get('method') or ''}, "
                f"{'per-channel' if d.get('per_channel') else 'per-tensor'} weights"
                f"{' (7-bit, reduce_range)' if d.get('reduce_range') else ''}; "
                f"{d.get('quantized_nodes')} nodes quantized, {len(d.get('excluded') or [])} kept float, "
                f"{d.get('samples')} calibration samples."
            )
            sens = d.get("sensitivity") or []
            if sens:
                lines += [
                    "",
                    "| tensor (worst first) | op | SQNR dB | cosine |",
                    "|---|---|---:|---:|",
                ]
                for t in sens[:20]:
                    lines.append(
                        f"| {t['tensor']} | {t['op_type']} | {_num(t['sqnr_db'])} | {_num(t['cosine'], 6)} |"
                    )
            for w in d.get("warnings") or []:
                lines.append(f"\n- warning: {w}")
    lines += ["", "## Recipe", "", "```yaml", data.get("recipe_text", "").rstrip(), "```", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------ SVG


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    exp = math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if m * 10**exp >= v:
            return m * 10**exp
    return 10 ** (exp + 1)  # pragma: no cover


def bar_chart(
    key: str,
    title: str,
    labels: Sequence[str],
    values: Sequence[float | None],
    fmt: Callable[[float], str],
    *,
    ratio_to_first: bool = True,
    lo: float = 0.0,
    hi: float | None = None,
) -> str:
    """Vertical bars, one per step, value labels on top (ratio to the input below)."""
    w, h = 336, 230
    left, right, top, bottom = 60, 8, 30, 48
    pw, ph = w - left - right, h - top - bottom
    vals = [v for v in values if v is not None]
    top_v = hi if hi is not None else _nice_max(max(vals) if vals else 1.0)
    n = max(len(labels), 1)
    slot = pw / n
    bw = min(56.0, slot * 0.62)
    out = [
        f'<svg class="plot" data-plot="{_e(key)}" viewBox="0 0 {w} {h}" width="{w}" height="{h}" '
        f'role="img" aria-label="{_e(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{_e(title)}</title>",
        f'<text x="{left}" y="16" class="t">{_e(title)}</text>',
    ]
    for i in range(5):
        v = lo + (top_v - lo) * i / 4
        y = top + ph - ph * i / 4
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{w - right}" y2="{y:.1f}" class="grid"/>')
        out.append(
            f'<text x="{left - 5}" y="{y + 3:.1f}" class="ax" text-anchor="end">{_e(fmt(v))}</text>'
        )
    first = values[0] if values else None
    for i, (lab, v) in enumerate(zip(labels, values)):
        cx = left + slot * (i + 0.5)
        out.append(
            f'<text x="{cx:.1f}" y="{h - bottom + 14}" class="ax" text-anchor="middle">{_e(_short(lab, 14))}</text>'
        )
        if v is None:
            out.append(
                f'<text x="{cx:.1f}" y="{top + ph - 4}" class="ax" text-anchor="middle">n/a</text>'
            )
            continue
        frac = 0.0 if top_v == lo else max(0.0, min(1.0, (v - lo) / (top_v - lo)))
        bh = ph * frac
        color = _COLORS[i % len(_COLORS)]
        out.append(
            f'<rect x="{cx - bw / 2:.1f}" y="{top + ph - bh:.1f}" width="{bw:.1f}" height="{max(bh, 0.5):.1f}" '
            f'fill="{color}" rx="2"><title>{_e(lab)}: {_e(fmt(v))}</title></rect>'
        )
        out.append(
            f'<text x="{cx:.1f}" y="{top + ph - bh - 4:.1f}" class="val" text-anchor="middle">{_e(fmt(v))}</text>'
        )
        if ratio_to_first and first and i > 0:
            out.append(
                f'<text x="{cx:.1f}" y="{h - bottom + 27}" class="ratio" text-anchor="middle">{v / first:.3f}x</text>'
            )
    out.append(f'<line x1="{left}" y1="{top + ph}" x2="{w - right}" y2="{top + ph}" class="axis"/>')
    out.append("</svg>")
    return "".join(out)


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def _tail(text: str, n: int) -> str:
    return text if len(text) <= n else "\u2026" + text[-(n - 1) :]


def grouped_chart(
    key: str,
    title: str,
    labels: Sequence[str],
    series: dict[str, Sequence[float | None]],
    lo: float,
) -> str:
    """Grouped vertical bars (fidelity: cosine, top-1 agreement, accuracy) on [lo, 1]."""
    w, h = 560, 250
    left, right, top, bottom = 46, 10, 46, 36
    pw, ph = w - left - right, h - top - bottom
    names = [k for k, v in series.items() if any(x is not None for x in v)]
    n = max(len(labels), 1)
    slot = pw / n
    bw = min(28.0, slot * 0.8 / max(len(names), 1))
    out = [
        f'<svg class="plot" data-plot="{_e(key)}" viewBox="0 0 {w} {h}" width="{w}" height="{h}" '
        f'role="img" aria-label="{_e(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{_e(title)}</title>",
        f'<text x="{left}" y="16" class="t">{_e(title)}</text>',
    ]
    lx = left
    for j, name in enumerate(names):
        out.append(
            f'<rect x="{lx}" y="26" width="10" height="10" fill="{_COLORS[(j + 1) % len(_COLORS)]}" rx="2"/>'
        )
        out.append(f'<text x="{lx + 14}" y="35" class="ax">{_e(name)}</text>')
        lx += 20 + 7 * len(name)
    for i in range(5):
        v = lo + (1 - lo) * i / 4
        y = top + ph - ph * i / 4
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{w - right}" y2="{y:.1f}" class="grid"/>')
        out.append(
            f'<text x="{left - 5}" y="{y + 3:.1f}" class="ax" text-anchor="end">{v:.3g}</text>'
        )
    for i, lab in enumerate(labels):
        cx = left + slot * (i + 0.5)
        out.append(
            f'<text x="{cx:.1f}" y="{h - bottom + 14}" class="ax" text-anchor="middle">{_e(_short(lab, 18))}</text>'
        )
        x0 = cx - bw * len(names) / 2
        for j, name in enumerate(names):
            v = series[name][i]
            if v is None:
                continue
            frac = max(0.0, min(1.0, (v - lo) / (1 - lo)))
            bh = ph * frac
            x = x0 + j * bw
            out.append(
                f'<rect x="{x + 1:.1f}" y="{top + ph - bh:.1f}" width="{bw - 2:.1f}" height="{max(bh, 0.5):.1f}" '
                f'fill="{_COLORS[(j + 1) % len(_COLORS)]}" rx="2"><title>{_e(lab)} {_e(name)}: {v:.6g}</title></rect>'
            )
            out.append(
                f'<text x="{x + bw / 2:.1f}" y="{top + ph - bh - 3:.1f}" class="val small" text-anchor="middle">{v:.4g}</text>'
            )
    out.append(f'<line x1="{left}" y1="{top + ph}" x2="{w - right}" y2="{top + ph}" class="axis"/>')
    out.append("</svg>")
    return "".join(out)


def hbar_chart(
    key: str,
    title: str,
    rows: Sequence[tuple[str, float, float | None, str]],
    *,
    max_value: float,
    color: str = "#2563eb",
    back: str = "#e2e8f0",
) -> str:
    """Horizontal bars: (label, value, background extent or None, value text)."""
    row_h = 18
    label_w = 320
    w = 900
    bar_w = w - label_w - 170
    h = 30 + row_h * len(rows) + 6
    out = [
        f'<svg class="plot" data-plot="{_e(key)}" viewBox="0 0 {w} {h}" width="{w}" height="{h}" '
        f'role="img" aria-label="{_e(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{_e(title)}</title>",
        f'<text x="4" y="16" class="t">{_e(title)}</text>',
    ]
    scale = bar_w / max_value if max_value > 0 else 0
    for i, (label, value, extent, text) in enumerate(rows):
        y = 28 + i * row_h
        out.append(
            f'<text x="{label_w - 6}" y="{y + 12}" class="ax" text-anchor="end">{_e(_tail(label, 52))}<title>{_e(label)}</title></text>'
        )
        if extent is not None:
            out.append(
                f'<rect x="{label_w}" y="{y + 2}" width="{extent * scale:.1f}" height="{row_h - 5}" fill="{back}" rx="2"/>'
            )
        out.append(
            f'<rect x="{label_w}" y="{y + 2}" width="{max(value * scale, 0.5):.1f}" height="{row_h - 5}" fill="{color}" rx="2">'
            f"<title>{_e(label)}: {_e(text)}</title></rect>"
        )
        end = max(value, extent or 0) * scale
        out.append(f'<text x="{label_w + end + 6:.1f}" y="{y + 12}" class="val">{_e(text)}</text>')
    out.append("</svg>")
    return "".join(out)


def gate_chart(gates: Sequence[dict[str, Any]]) -> str:
    """One row per gate: value against threshold, margin in the gate's direction."""
    row_h = 34
    w = 900
    h = 26 + row_h * len(gates)
    left = 260
    pw = w - left - 260
    out = [
        f'<svg class="plot" data-plot="gates" viewBox="0 0 {w} {h}" width="{w}" height="{h}" '
        'role="img" aria-label="Gates" xmlns="http://www.w3.org/2000/svg">',
        "<title>Gates and their margins</title>",
        '<text x="4" y="16" class="t">Gates: value vs threshold (tick)</text>',
    ]
    for i, g in enumerate(gates):
        y = 26 + i * row_h
        value, thr = g.get("value"), g["threshold"]
        color = _PASS if g["passed"] else _FAIL
        out.append(
            f'<text x="{left - 6}" y="{y + 15}" class="ax" text-anchor="end">{_e(g["step"])}: {_e(g["name"])}</text>'
        )
        if value is None or isinstance(value, str):
            continue
        span = max(abs(value), abs(thr), 1e-12) * 1.15
        lo = min(0.0, value, thr)
        hi = max(span, value, thr)
        sx = pw / (hi - lo) if hi > lo else 0

        def x(v: float, lo: float = lo, sx: float = sx) -> float:
            return left + (v - lo) * sx

        out.append(f'<rect x="{left}" y="{y + 4}" width="{pw}" height="16" fill="#f1f5f9" rx="3"/>')
        out.append(
            f'<rect x="{left}" y="{y + 4}" width="{max(x(value) - left, 0.5):.1f}" height="16" fill="{color}" rx="3" opacity="0.85">'
            f"<title>{_e(g['name'])}: {value:.6g}</title></rect>"
        )
        out.append(
            f'<line x1="{x(thr):.1f}" y1="{y}" x2="{x(thr):.1f}" y2="{y + 24}" stroke="#0f172a" stroke-width="2"/>'
        )
        margin = g.get("margin")
        verdict = "PASS" if g["passed"] else "FAIL"
        out.append(
            f'<text x="{left + pw + 8}" y="{y + 15}" class="val" fill="{color}">{verdict} {value:.4g} '
            f"(margin {margin:+.3g})</text>"
        )
    out.append("</svg>")
    return "".join(out)


# ------------------------------------------------------------------ HTML

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;margin:0;background:#f8fafc;color:#0f172a}
main{max-width:1180px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 10px;border-bottom:1px solid #e2e8f0;padding-bottom:4px}
.meta{color:#475569;font-size:13px;line-height:1.6}.meta code{font-size:12px}
.badge{display:inline-block;padding:3px 10px;border-radius:12px;font-weight:600;font-size:13px;color:#fff}
.pass{background:#16a34a}.fail{background:#dc2626}
.reason{margin-top:8px;padding:8px 12px;background:#fef2f2;border:1px solid #fecaca;border-radius:6px;color:#991b1b;font-size:14px}
table{border-collapse:collapse;font-size:13px;background:#fff;border:1px solid #e2e8f0}
th,td{padding:5px 10px;border-bottom:1px solid #e2e8f0;text-align:right;white-space:nowrap}
th{background:#f1f5f9;font-weight:600}td:first-child,th:first-child,td.l{text-align:left}
.grid-plots{display:flex;flex-wrap:wrap;gap:14px}
.card{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:10px 12px}
svg .t{font-size:13px;font-weight:600;fill:#0f172a}svg .ax{font-size:10.5px;fill:#475569}
svg .val{font-size:10.5px;fill:#0f172a}svg .small{font-size:9px}svg .ratio{font-size:10px;fill:#2563eb}
svg .grid{stroke:#e2e8f0;stroke-width:1}svg .axis{stroke:#94a3b8;stroke-width:1}
pre{background:#0f172a;color:#e2e8f0;padding:12px;border-radius:8px;font-size:12px;overflow:auto}
.note{color:#64748b;font-size:12px;margin:6px 0}.warn{color:#b45309;font-size:13px}
"""


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in r) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(data: dict[str, Any]) -> str:
    """The self-contained report page."""
    rows = _model_rows(data)
    labels = [r["name"] for r in rows]
    metric = [r["metrics"] for r in rows]
    passed = data["passed"]
    badge = (
        '<span class="badge pass">PASSED</span>'
        if passed
        else '<span class="badge fail">FAILED</span>'
    )
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>onnxcomp compress report: {_e(Path(data['input']).name)}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f"<h1>onnxcomp compress report {badge}</h1>",
        '<div class="meta">',
        f"input <code>{_e(data['input'])}</code><br>",
        f"output <code>{_e(data['output'] or '(not written)')}</code><br>",
        f"recipe <code>{_e(data['recipe']['path'] or '(text)')}</code> &middot; work folder <code>{_e(data['work_dir'])}</code><br>",
        f"onnxcomp {_e(data.get('onnxcomp', ''))} &middot; {_e(data.get('created', ''))} &middot; {data['seconds']:.1f} s",
        "</div>",
    ]
    if not passed:
        parts.append(f'<div class="reason">{_e(data["failure"])}</div>')
    # summary table
    trs = []
    for s in data["steps"]:
        m = s["metrics"]
        if s["kind"] == "verify":
            gates = ", ".join(
                f"{g['name']} {'PASS' if g['passed'] else 'FAIL'}" for g in s["gates"]
            )
            trs.append(
                [
                    _e(s["name"]),
                    _e(s["status"]),
                    f'<td class="l" colspan="8">gates: {_e(gates)}</td>',
                ]
            )
            continue
        trs.append(
            [
                _e(s["name"]),
                _e(s["status"]),
                _num(m.get("params")),
                _count(m.get("macs")),
                _bytes(m.get("size")),
                _ms(m.get("latency_ms")),
                _ratio(m.get("latency_ratio")),
                _num(m.get("cosine"), 6),
                _pct(m.get("top1_agreement")),
                _pct(m.get("accuracy")),
            ]
        )
    parts.append("<h2>Steps</h2>")
    parts.append(
        _table(
            [
                "step",
                "status",
                "params",
                "MACs",
                "size",
                "latency",
                "latency ratio",
                "cosine",
                "top-1 agree",
                "accuracy",
            ],
            trs,
        )
    )
    mdata = data["recipe"]["measure"]
    parts.append(
        f'<p class="note">Fidelity, accuracy and latency of every step are measured against the input model on '
        f"data source <b>{_e(mdata.get('data') or 'none')}</b> (latency: median of interleaved runs in the same "
        f"process, batch of one sample). Resumed steps show the figures of the run that made them.</p>"
    )
    # per-step plots
    parts.append('<h2>Per step</h2><div class="grid-plots">')
    parts.append(
        f'<div class="card">{bar_chart("params", "Parameters", labels, [m.get("params") for m in metric], _count)}</div>'
    )
    parts.append(
        f'<div class="card">{bar_chart("macs", "MACs", labels, [m.get("macs") for m in metric], _count)}</div>'
    )
    parts.append(
        f'<div class="card">{bar_chart("size", "File size", labels, [m.get("size") for m in metric], _bytes)}</div>'
    )
    lat = [m.get("latency_ms") for m in metric]
    parts.append(
        f'<div class="card">{bar_chart("latency", "Latency (ms, median)", labels, lat, lambda v: f"{v:.3g}")}</div>'
    )
    fid = {
        "cosine": [m.get("cosine") for m in metric],
        "top-1 agreement": [m.get("top1_agreement") for m in metric],
        "accuracy": [m.get("accuracy") for m in metric],
    }
    vals = [v for s in fid.values() for v in s if v is not None]
    lo = 0.0
    if vals:
        lo = max(0.0, math.floor((min(vals) - 0.05) * 20) / 20)
    parts.append(
        f'<div class="card">{grouped_chart("fidelity", "Fidelity vs the input model", labels, fid, lo)}</div>'
    )
    parts.append("</div>")
    # gates
    gates = data["gates"]
    if gates:
        parts.append("<h2>Gates</h2>")
        parts.append(f'<div class="card">{gate_chart(gates)}</div>')
        grows = [
            [
                _e(g["step"]),
                _e(g["name"]),
                _num(g["value"], 6),
                _num(g["threshold"], 6),
                _num(g["margin"], 4),
                f'<span class="badge {"pass" if g["passed"] else "fail"}">{"PASS" if g["passed"] else "FAIL"}</span>',
            ]
            for g in gates
        ]
        parts.append(
            '<div style="margin-top:10px">'
            + _table(["step", "gate", "value", "threshold", "margin", "result"], grows)
            + "</div>"
        )
    # pruning
    for s in data["steps"]:
        if s["kind"] == "prune" and s["details"].get("plan"):
            plan = s["details"]["plan"]
            layers = [c for c in plan["layers"] if c["before"] != c["after"]] or plan["layers"]
            ranking = f"criterion {_e(plan.get('criterion'))}"
            if (s["details"].get("report") or {}).get("reconstructed"):
                ranking += ", consumers refitted by least squares (reconstruction)"
            parts.append(f"<h2>Pruning ({_e(s['name'])}): channels kept per layer</h2>")
            parts.append(
                f'<p class="note">{ranking}; MACs {_count(plan["macs_before"])} &rarr; '
                f"{_count(plan['macs_after'])}, params {_num(plan['params_before'])} &rarr; {_num(plan['params_after'])} "
                f"(plan estimate); grey: channels before, blue: kept.</p>"
            )
            if layers:
                mx = max(c["before"] for c in layers)
                hrows = [
                    (
                        f"{c['node']} ({c['op_type']})",
                        c["after"],
                        c["before"],
                        f"{c['after']}/{c['before']}",
                    )
                    for c in layers
                ]
                parts.append(
                    f'<div class="card">{hbar_chart("prune-" + str(s["index"]), "Channels kept per layer", hrows, max_value=mx)}</div>'
                )
            alone = [g for g in plan.get("groups", []) if not g.get("pruned")]
            if alone:
                arows = [
                    [
                        _e(", ".join(g["nodes"])[:70]),
                        str(g["channels"]),
                        f'<td class="l">{_e((g["reasons"] or [""])[0][:120])}</td>',
                    ]
                    for g in alone
                ]
                parts.append(
                    '<div style="margin-top:10px">'
                    + _table(["left alone", "channels", "why"], arows)
                    + "</div>"
                )
        if s["kind"] == "quantize":
            d = s["details"]
            parts.append(f"<h2>Quantization ({_e(s['name'])})</h2>")
            parts.append(
                f'<p class="note">{_e(d.get("mode"))} {_e(d.get("format"))} {_e(d.get("method") or "")}, '
                f"{'per-channel' if d.get('per_channel') else 'per-tensor'} weights"
                f"{' (7-bit, reduce_range)' if d.get('reduce_range') else ''}; {_e(d.get('quantized_nodes'))} nodes quantized, "
                f"{len(d.get('excluded') or [])} kept float; {_e(d.get('samples'))} calibration samples.</p>"
            )
            sens = [
                t for t in d.get("sensitivity") or [] if isinstance(t.get("sqnr_db"), (int, float))
            ]
            if sens:
                sens = sens[:25]
                mx = max(max(t["sqnr_db"] for t in sens), 1.0)
                hrows = [
                    (
                        f"{t['tensor']} ({t['op_type']})",
                        max(t["sqnr_db"], 0.0),
                        None,
                        f"{t['sqnr_db']:.1f} dB, cos {t['cosine']:.4f}",
                    )
                    for t in sens
                ]
                parts.append(
                    '<div class="card">'
                    + hbar_chart(
                        "sensitivity-" + str(s["index"]),
                        "Per-tensor sensitivity: SQNR of int8 vs float (worst first)",
                        hrows,
                        max_value=mx,
                        color="#d97706",
                    )
                    + "</div>"
                )
            else:
                parts.append(
                    '<p class="note">No per-tensor sensitivity in this step (set <code>sensitivity: true</code>).</p>'
                )
            for w in d.get("warnings") or []:
                parts.append(f'<p class="warn">warning: {_e(w)}</p>')
    parts.append("<h2>Recipe</h2>")
    parts.append(f"<pre>{_e(data.get('recipe_text', ''))}</pre>")
    parts.append("</main></body></html>")
    return "\n".join(parts)


def write_report(result: Any, folder: str | os.PathLike[str]) -> list[Path]:
    """Write report.json, report.md and report.html; returns their paths."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    data = _json_ready(result.to_dict())
    data["created"] = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    paths = [out / "report.json", out / "report.md", out / "report.html"]
    texts = [json.dumps(data, indent=1), render_markdown(data), render_html(data)]
    for p, text in zip(paths, texts):
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, p)
    return paths
