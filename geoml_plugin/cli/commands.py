"""The ``geoml`` subcommands: their options and the job each runs.

Each job command adds its file options (the Processing algorithm's names: INPUT → ``--input``, MODEL →
``--model``, OUTPUT_MODEL → ``--output-model``) and the options built from its Config's specification
(``options.add_spec_options``), and turns the parsed arguments into the Config (``build``).
"""
from __future__ import annotations

import argparse
import os
import re

from ..core.device import DEVICE_CHOICES
from ..core.errors import InputError
from .options import add_spec_options, spec_values


def numbers(count: int, what: str):
    """An argparse type: 'a,b[,…]' → a tuple of ``count`` floats."""

    def convert(text: str) -> tuple:
        try:
            values = tuple(float(p) for p in re.split(r"[,\s]+", text.strip()) if p)
        except ValueError:
            values = ()
        if len(values) != count:
            raise argparse.ArgumentTypeError(f"'{text}' is not {what}")
        return values

    convert.__name__ = what
    return convert


EXTENT = numbers(4, "xmin,ymin,xmax,ymax")
POINT = numbers(2, "x,y")


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto",
                   help="Compute device: auto uses a CUDA GPU when one is available (default: %(default)s). "
                        "Under torchrun each process uses the GPU of its LOCAL_RANK.")


# -- predict -----------------------------------------------------------------
def add_predict(p: argparse.ArgumentParser) -> None:
    from ..core.predict import PredictConfig

    p.add_argument("--input", required=True, nargs="+", metavar="RASTER",
                   help="Input raster; several rasters or a folder map each to its own output in the OUTPUT folder.")
    p.add_argument("--model", required=True, help="GeoML model file (.safetensors) or ONNX model (.onnx).")
    p.add_argument("--output", required=True,
                   help="Output GeoTIFF (classes 1..K, 0 = nodata; or Float32 values), or a folder for several inputs.")
    p.add_argument("--output-confidence", default=None, metavar="TIF",
                   help="Confidence GeoTIFF (probability of the winning class, classifiers only).")
    p.add_argument("--confidence", action="store_true",
                   help="Several inputs: also write <name>_confidence.tif beside each output.")
    p.add_argument("--extent", type=EXTENT, default=None, metavar="XMIN,YMIN,XMAX,YMAX",
                   help="Map only this area (in the raster's CRS).")
    p.add_argument("--cog", action="store_true",
                   help="Write Cloud-Optimized GeoTIFFs (tiled, DEFLATE, overviews).")
    add_device(p)
    add_spec_options(p, PredictConfig, "batch_size", "stride", "bands", "views", "overlap", "min_region")


def _one_input(inputs: list) -> bool:
    return len(inputs) == 1 and not os.path.isdir(inputs[0])


def build_predict(args):
    from ..core.predict import PredictConfig

    return PredictConfig(args.input[0], args.model, args.output, confidence_path=args.output_confidence,
                         device=args.device, cog=args.cog, **spec_values(args, PredictConfig))


def run_predict_command(args, feedback):
    from ..core.predict import run_predict
    from ..core.predict_many import run_predict_many

    cfg = build_predict(args)
    if not _one_input(args.input):
        if args.output_confidence or args.extent:
            raise InputError("With several input rasters, give --confidence instead of --output-confidence; "
                             "--extent applies to one raster only.")
        return run_predict_many(cfg, args.input if len(args.input) > 1 else args.input[0], args.output,
                                confidence=args.confidence, feedback=feedback)
    if args.extent:
        from ..core.raster.io import raster_info, window_from_extent

        cfg.window = window_from_extent(raster_info(cfg.input_path), *args.extent)
    return run_predict(cfg, feedback)


# -- finetune ----------------------------------------------------------------
def add_finetune(p: argparse.ArgumentParser) -> None:
    from ..core.finetune.job import FinetuneConfig

    p.add_argument("--input", required=True, help="Input raster.")
    p.add_argument("--labels", required=True,
                   help="Labels: points or polygons (a vector file such as .gpkg or .shp) or a label raster.")
    p.add_argument("--output-model", required=True, help="Model file to write (.safetensors added when missing).")
    p.add_argument("--output-report", default=None, help="Training report (HTML; metrics JSON beside it).")
    add_device(p)
    p.add_argument("--checkpoint-dir", default=None,
                   help="An existing folder: a checkpoint after every epoch (safetensors + JSON).")
    p.add_argument("--checkpoint-every", type=int, default=0, metavar="N",
                   help="Also a checkpoint every N training steps within an epoch (long epochs; 0: after each "
                        "epoch only).")
    p.add_argument("--resume", action="store_true",
                   help="Continue from the checkpoint in --checkpoint-dir when there is one.")
    add_spec_options(p, FinetuneConfig)


def build_finetune(args):
    from ..core.finetune.job import FinetuneConfig
    from ..core.finetune.pretrained import parse_weight_bands
    from ..core.outputs import output_name

    checkpoints = checkpoint_values(args)
    values = spec_values(args, FinetuneConfig)
    values["weight_bands"] = parse_weight_bands(values.get("weight_bands"))
    return FinetuneConfig(args.input, args.labels, output_model=output_name(args.output_model, "model"),
                          output_report=args.output_report, device=args.device, **checkpoints, **values)


def run_finetune_command(args, feedback):
    from ..core.finetune.job import run_finetune

    return run_finetune(build_finetune(args), feedback)


def add_checkpoint_options(p: argparse.ArgumentParser, unit: str, default: str) -> None:
    """--checkpoint-dir / --checkpoint-every / --resume of the iteration-based training jobs."""
    p.add_argument("--checkpoint-dir", default=None,
                   help=f"An existing folder: a checkpoint {default} (safetensors + JSON).")
    p.add_argument("--checkpoint-every", type=int, default=0, metavar="N",
                   help=f"A checkpoint every N {unit} instead (0: {default}).")
    p.add_argument("--resume", action="store_true",
                   help="Continue from the checkpoint in --checkpoint-dir when there is one.")


def checkpoint_values(args) -> dict:
    if args.resume and not args.checkpoint_dir:
        raise InputError("--resume needs --checkpoint-dir (the folder with the checkpoint).")
    if args.checkpoint_every and not args.checkpoint_dir:
        raise InputError("--checkpoint-every needs --checkpoint-dir (the folder for the checkpoints).")
    return dict(checkpoint_dir=args.checkpoint_dir, checkpoint_every=args.checkpoint_every, resume=args.resume)


# -- metatrain ---------------------------------------------------------------
def add_metatrain(p: argparse.ArgumentParser) -> None:
    from ..core.fewshot.metatrain import MetaTrainConfig

    p.add_argument("--input", required=True, help="Training raster.")
    p.add_argument("--extra-inputs", nargs="*", default=[], metavar="RASTER",
                   help="Additional training rasters (other regions, the same bands).")
    p.add_argument("--labels", required=True, help="Labels: points or polygons with a class field.")
    p.add_argument("--label-field", required=True, help="The field that holds the class of each label.")
    p.add_argument("--output-model", required=True, help="Meta-model file to write (.safetensors).")
    add_device(p)
    add_checkpoint_options(p, "iterations", "at every meta-validation")
    add_spec_options(p, MetaTrainConfig)


def build_metatrain(args):
    from ..core.fewshot.metatrain import MetaTrainConfig

    rasters = [args.input] + [r for r in args.extra_inputs if r != args.input]
    return MetaTrainConfig(rasters, args.labels, args.label_field, args.output_model, device=args.device,
                           **checkpoint_values(args), **spec_values(args, MetaTrainConfig))


def run_metatrain_command(args, feedback):
    from ..core.fewshot.metatrain import run_metatrain

    return run_metatrain(build_metatrain(args), feedback)


# -- fewshot -----------------------------------------------------------------
def add_fewshot(p: argparse.ArgumentParser) -> None:
    from ..core.fewshot.job import FewShotConfig

    p.add_argument("--input", required=True, help="Input raster (the region to map).")
    p.add_argument("--model", required=True, help="Meta-model or GeoML patch classifier.")
    p.add_argument("--support", required=True, help="Support points (a few per class) with a class field.")
    p.add_argument("--label-field", required=True, help="The field that holds the class of each support point.")
    p.add_argument("--output", required=True, help="Class raster to write (GeoTIFF).")
    p.add_argument("--output-confidence", default=None, help="Confidence raster (GeoTIFF).")
    p.add_argument("--output-model", default=None, help="Adapted model (a classifier for geoml predict).")
    add_device(p)
    add_spec_options(p, FewShotConfig)


def build_fewshot(args):
    from ..core.fewshot.job import FewShotConfig

    return FewShotConfig(args.input, args.model, args.output, support=args.support, label_field=args.label_field,
                         confidence_path=args.output_confidence, output_model=args.output_model,
                         device=args.device, **spec_values(args, FewShotConfig))


def run_fewshot_command(args, feedback):
    from ..core.fewshot.job import run_fewshot

    return run_fewshot(build_fewshot(args), feedback)


# -- traingan ----------------------------------------------------------------
def add_traingan(p: argparse.ArgumentParser) -> None:
    from ..core.gan.train import GanTrainConfig

    p.add_argument("--input", required=True, help="Input raster.")
    p.add_argument("--target", default=None, help="Target raster (conditional INPUT → TARGET translation).")
    p.add_argument("--output-model", required=True, help="Model file to write (.safetensors added when missing).")
    p.add_argument("--output-report", default=None, help="Training report (PNG; losses as CSV beside it).")
    add_device(p)
    add_checkpoint_options(p, "iterations", "every tenth of the iterations")
    add_spec_options(p, GanTrainConfig)


def build_traingan(args):
    from ..core.gan.train import GanTrainConfig
    from ..core.outputs import output_name

    return GanTrainConfig(args.input, output_name(args.output_model, "model"), target_path=args.target,
                          report_path=args.output_report, device=args.device, **checkpoint_values(args),
                          **spec_values(args, GanTrainConfig))


def run_traingan_command(args, feedback):
    from ..core.gan.train import run_traingan

    return run_traingan(build_traingan(args), feedback)


# -- generate ----------------------------------------------------------------
def add_generate(p: argparse.ArgumentParser) -> None:
    from ..core.gan.generate import GenerateConfig

    p.add_argument("--model", required=True, help="GeoML GAN model file.")
    p.add_argument("--output", required=True, help="Raster to write (Float32 GeoTIFF).")
    p.add_argument("--center", type=POINT, default=None, metavar="X,Y",
                   help="Center of the tiles (tile generators), in the output CRS.")
    p.add_argument("--extent", type=EXTENT, default=None, metavar="XMIN,YMIN,XMAX,YMAX",
                   help="Area to fill instead of --center, in the output CRS.")
    p.add_argument("--input", default=None, help="Input raster (translation models).")
    p.add_argument("--output-crs", default="", metavar="CRS",
                   help="Output CRS, e.g. EPSG:32632 or WKT (empty = the model's).")
    add_device(p)
    add_spec_options(p, GenerateConfig)


def crs_to_wkt(text: str) -> str:
    """'EPSG:32632', a PROJ string or WKT → WKT; '' stays ''."""
    if not text:
        return ""
    from osgeo import osr

    srs = osr.SpatialReference()
    try:
        ok = srs.SetFromUserInput(text) == 0
    except RuntimeError:
        ok = False
    if not ok:
        raise InputError(f"Output CRS '{text}' is not a coordinate reference system GDAL knows.",
                         "Give e.g. EPSG:32632 or a WKT definition.")
    return srs.ExportToWkt()


def build_generate(args):
    from ..core.gan.generate import GenerateConfig

    return GenerateConfig(args.model, args.output, center=args.center, extent=args.extent,
                          crs_wkt=crs_to_wkt(args.output_crs), input_path=args.input, device=args.device,
                          **spec_values(args, GenerateConfig))


def run_generate_command(args, feedback):
    from ..core.gan.generate import run_generate

    return run_generate(build_generate(args), feedback)


# the Config each command builds from its parsed arguments (command_line.py goes the other way)
BUILDERS = {"predict": build_predict, "finetune": build_finetune, "metatrain": build_metatrain,
            "fewshot": build_fewshot, "traingan": build_traingan, "generate": build_generate}

# name: (help, add options, run)
JOBS = {
    "predict": ("Apply a model to a raster (or to many; sharded under torchrun).", add_predict, run_predict_command),
    "finetune": ("Fine-tune a model on a raster and labels (data-parallel under torchrun).", add_finetune,
                 run_finetune_command),
    "metatrain": ("Meta-train a few-shot model on labelled rasters (data-parallel under torchrun).", add_metatrain,
                  run_metatrain_command),
    "fewshot": ("Map a raster from a few labelled points.", add_fewshot, run_fewshot_command),
    "traingan": ("Train a GAN tile generator or a raster-to-raster translator (data-parallel under torchrun).",
                 add_traingan,
                 run_traingan_command),
    "generate": ("Generate tiles or translate a raster with a GAN model.", add_generate, run_generate_command),
}
