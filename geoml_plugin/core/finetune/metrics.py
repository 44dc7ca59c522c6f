"""Validation metrics, in plain numpy: what a training report and a model file store.

Classification (patches or pixels): overall accuracy, Cohen's kappa, per-class
precision / recall / F1 and the confusion matrix (rows = truth, columns =
prediction); for segmentation also per-class IoU and mean IoU. Regression: RMSE, MAE, R² and bias, in the target's units. R² is None
(null in JSON) when every evaluated value is the same: it is then undefined, not 0.
"""
from __future__ import annotations

import numpy as np


def confusion_matrix(truth: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    truth = np.asarray(truth, np.int64).ravel()
    pred = np.asarray(pred, np.int64).ravel()
    ok = (truth >= 0) & (truth < k) & (pred >= 0) & (pred < k)
    return np.bincount(truth[ok] * k + pred[ok], minlength=k * k).reshape(k, k)


def classification_metrics(truth, pred, class_names: list, iou: bool = False) -> dict:
    """``iou`` (segmentation): also each class's intersection over union of its true and predicted pixels,
    TP / (TP + FP + FN), None for a class in neither, and their mean over the classes that occur (mIoU)."""
    return metrics_from_confusion(confusion_matrix(truth, pred, len(class_names)), class_names, iou)


def metrics_from_confusion(cm: np.ndarray, class_names: list, iou: bool = False) -> dict:
    """:func:`classification_metrics` of a confusion matrix (e.g. one summed over the ranks of a
    distributed run)."""
    cm = np.asarray(cm, np.int64)
    n = int(cm.sum())
    if n == 0:
        return {"samples": 0}
    diag = np.diag(cm).astype(float)
    oa = diag.sum() / n
    pe = float((cm.sum(axis=0) * cm.sum(axis=1)).sum()) / float(n) ** 2
    kappa = (oa - pe) / (1 - pe) if pe < 1 else 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(cm.sum(axis=0) > 0, diag / cm.sum(axis=0), 0.0)
        recall = np.where(cm.sum(axis=1) > 0, diag / cm.sum(axis=1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
        union = cm.sum(axis=0) + cm.sum(axis=1) - diag
        ious = np.where(union > 0, diag / union, np.nan)
    per_class = {
        name: {"precision": round(float(precision[i]), 4), "recall": round(float(recall[i]), 4),
               "f1": round(float(f1[i]), 4), "support": int(cm[i].sum())}
        for i, name in enumerate(class_names)
    }
    out = {
        "samples": n,
        "overall_accuracy": round(float(oa), 4),
        "kappa": round(float(kappa), 4),
        "macro_f1": round(float(f1.mean()), 4),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "class_names": list(class_names),
    }
    if iou:
        for i, name in enumerate(class_names):
            per_class[name]["iou"] = None if np.isnan(ious[i]) else round(float(ious[i]), 4)
        out["mean_iou"] = round(float(np.nanmean(ious)), 4)  # n > 0: some class occurs
    return out


def regression_metrics(truth, pred) -> dict:
    truth = np.asarray(truth, np.float64).ravel()
    pred = np.asarray(pred, np.float64).ravel()
    ok = np.isfinite(truth) & np.isfinite(pred)
    truth, pred = truth[ok], pred[ok]
    if truth.size == 0:
        return {"samples": 0}
    err = pred - truth
    ss_tot = float(((truth - truth.mean()) ** 2).sum())
    r2 = round(1.0 - float((err**2).sum()) / ss_tot, 4) if ss_tot > 0 else None  # undefined: all values equal
    return {
        "samples": int(truth.size),
        "rmse": round(float(np.sqrt((err**2).mean())), 6),
        "mae": round(float(np.abs(err).mean()), 6),
        "r2": r2,
        "bias": round(float(err.mean()), 6),
    }


def regression_sums(truth, pred) -> np.ndarray:
    """[n, Σe², Σ|e|, Σe, Σt, Σt²] of the finite pairs (e = pred − truth): what :func:`regression_from_sums`
    needs, and what the ranks of a distributed run add up."""
    truth = np.asarray(truth, np.float64).ravel()
    pred = np.asarray(pred, np.float64).ravel()
    ok = np.isfinite(truth) & np.isfinite(pred)
    truth, err = truth[ok], pred[ok] - truth[ok]
    return np.array([truth.size, (err**2).sum(), np.abs(err).sum(), err.sum(), truth.sum(), (truth**2).sum()])


def regression_from_sums(sums) -> dict:
    """:func:`regression_metrics` from :func:`regression_sums` (summed over ranks); R² through
    Σt² − (Σt)²/n, equal to the two-pass value up to rounding."""
    n, se2, sae, se, st, st2 = (float(v) for v in sums)
    if n == 0:
        return {"samples": 0}
    ss_tot = st2 - st * st / n
    r2 = round(1.0 - se2 / ss_tot, 4) if ss_tot > 1e-12 * max(st2, 1.0) else None
    return {"samples": int(n), "rmse": round(float(np.sqrt(se2 / n)), 6), "mae": round(sae / n, 6), "r2": r2,
            "bias": round(se / n, 6)}


R2_UNDEFINED = "undefined (all held-out values equal)"


def format_r2(r2) -> str:
    """R² for people: three decimals, or why there is none (:data:`R2_UNDEFINED`)."""
    return R2_UNDEFINED if r2 is None else f"{r2:.3f}"
