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
    k = len(class_names)
    cm = confusion_matrix(truth, pred, k)
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


R2_UNDEFINED = "undefined (all held-out values equal)"


def format_r2(r2) -> str:
    """R² for people: three decimals, or why there is none (:data:`R2_UNDEFINED`)."""
    return R2_UNDEFINED if r2 is None else f"{r2:.3f}"
