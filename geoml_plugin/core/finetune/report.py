"""Training report: one self-contained HTML page (inline SVG charts) + metrics JSON.

The HTML needs nothing to view — no scripts, no images beside it, no
matplotlib — so it opens in any browser or QGIS's help viewer and can be
mailed as is. It shows the learning curves (loss; validation accuracy or
RMSE), the confusion matrix as a heat map, per-class precision/recall/F1 and
what was trained on what (for regression the target's name and units, the
errors in those units). The JSON beside it (same name, ``.json``) holds the
same numbers for scripts.
"""
from __future__ import annotations

import html
import json
import os

from ..outputs import sidecar_name, write_text_atomic
from .metrics import format_r2

_W, _H, _PAD = 520, 240, 56


def _polyline(xs, ys, x0, x1, y0, y1, color, dash="") -> str:
    pts = []
    for x, y in zip(xs, ys):
        if y is None:
            continue
        px = _PAD + (x - x0) / max(x1 - x0, 1e-12) * (_W - 1.5 * _PAD)
        py = _H - _PAD + (y - y0) / max(y1 - y0, 1e-12) * -(_H - 1.5 * _PAD)
        pts.append(f"{px:.1f},{py:.1f}")
    extra = f' stroke-dasharray="{dash}"' if dash else ""
    return f'<polyline fill="none" stroke="{color}" stroke-width="2"{extra} points="{" ".join(pts)}"/>'


def line_chart(title: str, xs: list, series: list, y_label: str) -> str:
    """``series``: [(name, values, colour)]; None values are gaps. Returns an inline SVG."""
    vals = [v for _, ys, _ in series for v in ys if v is not None]
    if not xs or not vals:
        return ""
    y0, y1 = min(vals), max(vals)
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 0.5, y1 + 0.5
    x0, x1 = min(xs), max(xs)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" font-family="sans-serif" font-size="11">',
             f'<text x="{_W / 2}" y="14" text-anchor="middle" font-weight="bold">{html.escape(title)}</text>',
             f'<rect x="{_PAD}" y="{_PAD / 2}" width="{_W - 1.5 * _PAD}" height="{_H - 1.5 * _PAD}" fill="none" stroke="#ccc"/>']
    for i in range(5):
        v = y0 + (y1 - y0) * i / 4
        py = _H - _PAD - (_H - 1.5 * _PAD) * i / 4
        parts.append(f'<text x="{_PAD - 4}" y="{py + 4:.1f}" text-anchor="end">{v:.3g}</text>')
    parts.append(f'<text x="{_W / 2}" y="{_H - 8}" text-anchor="middle">epoch ({x0}–{x1})</text>')
    parts.append(f'<text x="11" y="{_H / 2}" transform="rotate(-90 11 {_H / 2})" text-anchor="middle">{html.escape(y_label)}</text>')
    for j, (name, ys, color) in enumerate(series):
        parts.append(_polyline(xs, ys, x0, x1, y0, y1, color, "5,3" if j else ""))
        parts.append(f'<text x="{_W - 1.5 * _PAD}" y="{_PAD / 2 + 14 + 13 * j}" text-anchor="end" fill="{color}">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def confusion_svg(cm: list, names: list) -> str:
    """Heat map of a confusion matrix (rows truth, columns prediction), row-normalised colours."""
    k = len(names)
    if k == 0:
        return ""
    cell = max(22, min(48, 420 // k))
    shown = [n if len(n) <= 40 else n[:39] + "…" for n in names]  # whole names (EuroSAT's HerbaceousVegetation)
    longest = max(len(n) for n in shown)
    char_w = 6.8  # 11 px sans-serif, generous
    left = max(130, int(longest * char_w) + 12)
    top = max(120, int(longest * char_w * 0.77) + 24)  # labels rotated by 50°
    size_w, size_h = max(left + cell * k + 10, 360), top + cell * k + 10
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{size_w}" height="{size_h}" font-family="sans-serif" font-size="11">',
             '<text x="4" y="14" font-weight="bold">Rows: true class · columns: predicted class</text>']
    for i, row in enumerate(cm):
        total = max(1, sum(row))
        for j, v in enumerate(row):
            f = v / total
            r, g, b = int(255 - 200 * f), int(255 - 130 * f), int(255 - 60 * f)
            x, y = left + j * cell, top + i * cell
            parts.append(f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="rgb({r},{g},{b})" stroke="#fff"/>')
            col = "#fff" if f > 0.6 else "#222"
            parts.append(f'<text x="{x + cell / 2}" y="{y + cell / 2 + 4}" text-anchor="middle" fill="{col}">{v}</text>')
    for i, n in enumerate(shown):
        label = html.escape(n)
        parts.append(f'<text x="{left - 6}" y="{top + i * cell + cell / 2 + 4}" text-anchor="end">{label}</text>')
        x = left + i * cell + cell / 2
        parts.append(f'<text x="{x}" y="{top - 6}" transform="rotate(-50 {x} {top - 6})">{label}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _metrics_table(m: dict, units: str = "", dense: bool = False) -> str:
    """``dense`` (segmentation, pixel regression): ``samples`` counts held-out pixels."""
    counted = "pixels" if dense else "samples"
    if "per_class" in m:
        seg = "mean_iou" in m  # segmentation: IoU per class and mean IoU

        def iou(v):
            return "" if not seg else "<td>–</td>" if v.get("iou") is None else f"<td>{v['iou']:.3f}</td>"

        rows = "".join(
            f"<tr><td>{html.escape(n)}</td><td>{v['precision']:.3f}</td><td>{v['recall']:.3f}</td>"
            f"<td>{v['f1']:.3f}</td>{iou(v)}<td>{v['support']}</td></tr>" for n, v in m["per_class"].items())
        miou = f"<b>mean IoU</b> {m['mean_iou']:.3f} · " if seg and m["mean_iou"] is not None else ""
        head = (f"<p><b>Overall accuracy</b> {m['overall_accuracy']:.2%} · <b>kappa</b> {m['kappa']:.3f} · "
                f"<b>macro F1</b> {m['macro_f1']:.3f} · {miou}{m['samples']} {'pixels' if seg else counted} "
                f"({html.escape(m.get('evaluated_on', ''))})</p>")
        note = ("<p>IoU: intersection over union of the pixels predicted and labelled as the class, "
                "TP / (TP + FP + FN); – for a class in neither. Mean IoU is over the classes that occur.</p>"
                if seg else "")
        return head + ("<table><tr><th>Class</th><th>Precision</th><th>Recall</th><th>F1</th>"
                       + ("<th>IoU</th>" if seg else "") + f"<th>Support</th></tr>{rows}</table>" + note)
    if "rmse" in m:
        u = f" {html.escape(units)}" if units else ""
        return (f"<p><b>RMSE</b> {m['rmse']:.4g}{u} · <b>MAE</b> {m['mae']:.4g}{u} · <b>R²</b> {format_r2(m.get('r2'))} · "
                f"<b>bias</b> {m['bias']:.4g}{u} · {m['samples']} {counted} ({html.escape(m.get('evaluated_on', ''))})</p>")
    return "<p>No metrics.</p>"


def labels_description(meta) -> str:
    """The labels a model was trained on, for people: "points.gpkg, field “class”" for a layer, "chm.tif (target
    raster)" or "lc.tif (label raster)" for a raster (which has no field)."""
    labels, field = meta.provenance.get("labels", ""), meta.provenance.get("label_field", "")
    if field:
        return f"{labels}, field “{field}”"
    return f"{labels} ({'target' if meta.task == 'regression' else 'label'} raster)"


def render_html(result, meta) -> str:
    target = (meta.target or {}) if meta.task == "regression" else {}
    units = target.get("units", "")
    hist = result.history
    xs = [h["epoch"] for h in hist]
    loss = line_chart("Loss", xs, [("training", [h["train_loss"] for h in hist], "#1f77b4"),
                                   ("validation", [h["val_loss"] for h in hist], "#ff7f0e")], "loss")
    is_cls = "overall_accuracy" in result.metrics
    score = line_chart("Validation accuracy" if is_cls else "Validation RMSE", xs,
                       [("validation", [h["val_score"] for h in hist], "#2ca02c")],
                       "accuracy" if is_cls else "RMSE" + (f" ({units})" if units else ""))
    cm = confusion_svg(result.metrics.get("confusion_matrix", []), result.metrics.get("class_names", [])) if is_cls else ""
    training = meta.extra.get("training", {})
    target_facts = {"Target": target.get("name", ""), "Target units": units or "not given"} if target else {}
    facts = {
        "Model file": result.model_path, "Task": meta.task, "Architecture": meta.architecture,
        "Backbone": meta.provenance.get("backbone", ""), "Starting weights": meta.provenance.get("weights", ""),
        "Input raster": meta.provenance.get("source", ""), "Bands": ", ".join(meta.band_names),
        "Labels": labels_description(meta), **target_facts,
        "Patch size": f"{meta.patch_size} px", "Training / validation patches": f"{result.n_train} / {result.n_val}",
        "Epochs · batch · learning rate": f"{result.epochs} · {result.batch_size} · {result.learning_rate:g}",
        "Augmentation": "flips and 90° rotations" if training.get("augment") else "none",
        **({"Class balance": training.get("balance", "")} if training.get("balance") else {}),
        "Device": result.device,
        "Training time": f"{result.train_seconds:.0f} s ({result.samples_per_second:.0f} patches/s)",
    }
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts.items())
    style = ("body{font-family:sans-serif;max-width:1100px;margin:1em auto;color:#222}table{border-collapse:collapse}"
             "td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}svg{margin:6px}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>GeoML training report</title><style>{style}</style>"
            f"</head><body><h1>GeoML fine-tuning report</h1><h2>Validation metrics</h2>{_metrics_table(result.metrics, units, meta.output == 'dense')}"
            f"<h2>Learning curves</h2><div>{loss}{score}</div>"
            + (f"<h2>Confusion matrix</h2>{cm}" if cm else "")
            + f"<h2>Run</h2><table>{rows}</table></body></html>")


def metrics_path(report_path: str) -> str:
    """The metrics JSON that :func:`write_report` writes beside the HTML report ``report_path``: same name,
    ``.json``."""
    return sidecar_name(report_path, "metrics")


def write_report(path: str, result, meta) -> tuple[str, str]:
    """Write ``path`` (HTML) and the metrics JSON beside it (:func:`metrics_path`); returns both paths."""
    html_path = os.path.abspath(path)
    json_path = metrics_path(html_path)
    payload = {"model": result.model_path, "task": result.task, "metrics": result.metrics, "history": result.history,
               "training": meta.extra.get("training", {}), "provenance": meta.provenance}
    if meta.task == "regression" and meta.target:
        payload["target"] = meta.target  # name, units and the value range the model was trained on
    from ..outputs import restore_files, snapshot_files

    saved = snapshot_files([json_path])
    write_text_atomic(json_path, json.dumps(payload, indent=2))
    try:
        write_text_atomic(html_path, render_html(result, meta))
    except BaseException:
        restore_files(saved)  # an earlier run's JSON back (before: deleted), or none
        raise
    return html_path, json_path
