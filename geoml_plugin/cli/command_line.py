"""A job's Config as the ``geoml …`` command that runs it (for "Copy as command line").

The inverse of ``commands.BUILDERS``: the file options of each command (``FILES``), then every specified
field whose value differs from its default, written as the option ``options.add_spec_options`` made for it.
``build(parse(command_line(name, cfg)))`` gives ``cfg`` back (tests/cli/test_cli.py checks it). A pixel window
(``PredictConfig.window``: the dialog's "map view only") becomes ``--extent`` in the raster's CRS; the few-shot
map tool's in-memory points have no command line.
"""
from __future__ import annotations

import shlex
from typing import Any

from ..core.spec import default_of, tool_params
from .options import option_name

# command: [(option, Config field)] in the order the command line shows them; a field None/empty is left out
FILES = {
    "predict": [("--input", "input_path"), ("--model", "model_path"), ("--output", "output_path"),
                ("--output-confidence", "confidence_path"), ("--device", "device"), ("--cog", "cog")],
    "finetune": [("--input", "input_path"), ("--labels", "labels"), ("--output-model", "output_model"),
                 ("--output-report", "output_report"), ("--device", "device"),
                 ("--checkpoint-dir", "checkpoint_dir"), ("--checkpoint-every", "checkpoint_every"),
                 ("--resume", "resume")],
    "metatrain": [("--input", "rasters"), ("--labels", "labels"), ("--label-field", "label_field"),
                  ("--output-model", "output_model"), ("--device", "device"),
                  ("--checkpoint-dir", "checkpoint_dir"), ("--checkpoint-every", "checkpoint_every"),
                  ("--resume", "resume")],
    "fewshot": [("--input", "input_path"), ("--model", "model_path"), ("--support", "support"),
                ("--label-field", "label_field"), ("--output", "output_path"),
                ("--output-confidence", "confidence_path"), ("--output-model", "output_model"),
                ("--device", "device")],
    "traingan": [("--input", "input_path"), ("--target", "target_path"), ("--output-model", "output_model"),
                 ("--output-report", "report_path"), ("--device", "device"),
                 ("--checkpoint-dir", "checkpoint_dir"), ("--checkpoint-every", "checkpoint_every"),
                 ("--resume", "resume")],
    "generate": [("--model", "model_path"), ("--output", "output_path"), ("--center", "center"),
                 ("--extent", "extent"), ("--input", "input_path"), ("--output-crs", "crs_wkt"),
                 ("--device", "device")],
}


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(_text(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _crs_text(wkt: str) -> str:
    """``--output-crs``: 'EPSG:n' where that gives this very WKT back (``commands.crs_to_wkt``), else the WKT."""
    from osgeo import osr

    from .commands import crs_to_wkt

    srs = osr.SpatialReference()
    try:
        if srs.ImportFromWkt(wkt) == 0 and srs.AutoIdentifyEPSG() == 0:
            code = f"{srs.GetAuthorityName(None)}:{srs.GetAuthorityCode(None)}"
            if crs_to_wkt(code) == wkt:
                return code
    except RuntimeError:  # GDAL's exceptions enabled: not identifiable
        pass
    return wkt


def _file_args(command: str, cfg) -> list:
    out = []
    for option, field in FILES[command]:
        value = getattr(cfg, field)
        if value is None or value == "" or value is False or (field == "checkpoint_every" and value == 0):
            continue
        if option == "--device" and value == "auto":
            continue
        if value is True:
            out.append(option)
        elif field == "crs_wkt":
            out += [option, _crs_text(value)]
        elif field == "rasters":
            out += [option, str(value[0])] + (["--extra-inputs", *map(str, value[1:])] if len(value) > 1 else [])
        else:
            out += [option, _text(value)]
    return out


def _spec_args(cfg) -> list:
    out = []
    config_class = type(cfg)
    for name, spec, _ in tool_params(config_class):
        value = getattr(cfg, name)
        if value == default_of(config_class, name):
            continue
        option = option_name(spec)
        if spec.kind == "bool":
            out.append(option if value else "--no-" + option[2:])
        elif spec.kind == "tiles":
            out += [option, "x".join(str(v) for v in value)]
        elif value is None:
            out += [option, str(spec.auto) if spec.auto is not None else ""]
        else:
            out += [option, _text(value)]
    return out


def _window_args(cfg) -> list:
    """A predict job's pixel window as ``--extent`` (map units of the raster, which is read for its grid)."""
    if getattr(cfg, "window", None) is None:
        return []
    from ..core.raster.io import raster_info

    x, y, w, h = cfg.window
    x0, px, _, y0, _, py = raster_info(cfg.input_path).geotransform
    xs, ys = (x0 + x * px, x0 + (x + w) * px), (y0 + y * py, y0 + (y + h) * py)
    return ["--extent", _text((min(xs), min(ys), max(xs), max(ys)))]


def command_args(command: str, cfg) -> list:
    """The arguments after ``geoml`` that run ``cfg``."""
    window = _window_args(cfg) if command == "predict" else []
    return [command, *_file_args(command, cfg), *window, *_spec_args(cfg)]


def command_line(command: str, cfg, program: str = "geoml") -> str:
    """``cfg`` as one shell command line, quoted for a POSIX shell."""
    return " ".join(shlex.quote(a) for a in [program, *command_args(command, cfg)])
