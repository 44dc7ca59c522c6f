"""Batch mapping: one model applied to many rasters (a list or a folder), each to its own output.

``run_predict_many(cfg, inputs, output_folder)`` runs ``geoml:predict`` with ``cfg``'s settings on each
input in turn, writing ``<output_folder>/<name>.tif`` (and ``<name>_confidence.tif`` with
``confidence=True``). All outputs are checked before the first scene starts (names that would clash, an
output that is an input, a folder that cannot be written). Under torchrun every scene is shared among the
processes (``sharded``), one after the other. A failure stops the run: scenes already written stay (each
is complete), the failing scene leaves no file.
"""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Optional, Sequence, Union

from .errors import InputError
from .outputs import check_not_an_input, check_writable
from .progress import Feedback, ensure_feedback

RASTER_EXTENSIONS = (".tif", ".tiff", ".vrt", ".img", ".jp2")


def list_inputs(inputs: Union[str, Sequence[str]]) -> list:
    """The rasters to map: the given paths, or the rasters (by extension, sorted) of a folder."""
    if isinstance(inputs, (str, os.PathLike)):
        folder = str(inputs)
        if not os.path.isdir(folder):
            return [folder]
        found = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                       if f.lower().endswith(RASTER_EXTENSIONS) and not f.startswith("."))
        if not found:
            raise InputError(f"The folder '{folder}' holds no raster ({', '.join(RASTER_EXTENSIONS)}).")
        return found
    paths = [str(p) for p in inputs]
    if not paths:
        raise InputError("No input rasters were given.")
    return paths


def batch_outputs(inputs: Union[str, Sequence[str]], output_folder: str, confidence: bool = False) -> list:
    """[(input, output, confidence output or None)] for each raster, refused before any work when two
    inputs would write the same file or an output would replace an input."""
    paths = list_inputs(inputs)
    if not os.path.isdir(output_folder):
        raise InputError(f"The output folder '{output_folder}' does not exist.")
    plan, seen = [], {}
    for p in paths:
        if not os.path.exists(p):
            raise InputError(f"The input raster '{p}' does not exist.")
        stem = os.path.splitext(os.path.basename(p))[0]
        if stem in seen:
            raise InputError(f"'{p}' and '{seen[stem]}' would both be written to {stem}.tif.",
                             "Rename one of them, or map them into different folders.")
        seen[stem] = p
        out = os.path.join(output_folder, stem + ".tif")
        conf = os.path.join(output_folder, stem + "_confidence.tif") if confidence else None
        plan.append((p, out, conf))
    all_inputs = {f"input raster '{os.path.basename(p)}'": p for p in paths}
    for _, out, conf in plan:
        for o in (out, conf):
            if o:
                check_writable(o)
                check_not_an_input(o, all_inputs)
    return plan


def run_predict_many(cfg, inputs: Union[str, Sequence[str]], output_folder: str, confidence: bool = False,
                     feedback: Optional[Feedback] = None) -> list:
    """``run_predict`` with ``cfg``'s model and settings on every input raster; the results, in order."""
    from .predict import run_predict

    fb = ensure_feedback(feedback)
    plan = batch_outputs(inputs, output_folder, confidence)
    results = []
    for i, (src, out, conf) in enumerate(plan):
        fb.log(f"Scene {i + 1}/{len(plan)}: {os.path.basename(src)} → {os.path.basename(out)}")
        one = replace(cfg, input_path=src, output_path=out, confidence_path=conf)
        results.append(run_predict(one, fb.sub(i / len(plan), (i + 1) / len(plan))))
    return results
