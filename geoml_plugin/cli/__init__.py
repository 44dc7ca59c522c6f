"""``geoml``: GeoML's jobs from the command line, without QGIS or Qt.

``geoml predict --input scene.tif --model model.safetensors --output classes.tif`` runs the same job as
Processing's ``geoml:predict``, with options built from the same parameter specifications
(``cli/options.py``). Under ``torchrun`` the jobs share the work among the processes (``core/distributed.py``);
only rank 0 prints the result. ``python -m geoml_plugin`` is the same program.

Nothing here imports qgis or Qt; torch is imported only by the job that needs it, after :func:`main` has
made OpenMP's idle threads sleep rather than spin and taken ``--threads`` (``core/threads.py``).
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from .commands import JOBS
from .console import EXIT_OK, fail, print_result, run_job
from .options import as_options

PROG = "geoml"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="Print the result as JSON on stdout (log lines on stderr).")
    p.add_argument("--debug", action="store_true", help="Show the traceback when the job fails.")
    p.add_argument("--quiet", "-q", action="store_true", help="No progress or log lines, only the result.")
    p.add_argument("--threads", type=_threads, default=None, metavar="N",
                   help="CPU threads for torch (default: GEOML_THREADS, else OMP_NUM_THREADS, else the physical "
                        "cores). Idle threads sleep rather than spin unless OMP_WAIT_POLICY is set.")


def _threads(text: str) -> int:
    from ..core.threads import parse_threads

    n = parse_threads(text)
    if n is None:
        raise argparse.ArgumentTypeError(f"expected a whole number of threads, 1 or more, not {text!r}")
    return n


def build_parser() -> argparse.ArgumentParser:
    from ..version import __version__

    parser = argparse.ArgumentParser(
        prog=PROG, description="GeoML: deep learning for rasters, from the command line (no QGIS needed).",
        epilog="Run 'geoml <command> --help' for a command's options. Several processes or GPUs: "
               "torchrun --nproc-per-node N $(which geoml) predict|finetune|metatrain|traingan …")
    parser.add_argument("--version", action="version", version=f"GeoML {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="command")
    sub.required = True
    for name, (text, add, _run) in JOBS.items():
        p = sub.add_parser(name, help=text, description=text)
        add(p)
        _common(p)
        p.set_defaults(option_strings=frozenset(s for a in p._actions for s in a.option_strings))
    p = sub.add_parser("info", help="Describe a GeoML model file (its metadata; nothing is unpickled or run).",
                       description="Describe a GeoML model file from its metadata, without loading the network.")
    p.add_argument("model", nargs="?", help="GeoML model file (.safetensors).")
    p.add_argument("--model", dest="model_option", default=None, help="The same, as an option.")
    _common(p)
    sub.add_parser("weights", add_help=False,
                   help="Pretrained weights: list, download, verify, remove (the Weights… manager's terminal side)."
                   ).add_argument("rest", nargs=argparse.REMAINDER)
    p = sub.add_parser("version", help="Print GeoML's version and those of its libraries.")
    _common(p)
    p = sub.add_parser("diagnostics", help="Check the libraries GeoML needs and describe the compute device.")
    _common(p)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The ``geoml`` console script; returns the exit status (0 done, 1 failed, 2 bad usage, 130 cancelled)."""
    from ..core import threads

    argv = list(sys.argv[1:] if argv is None else argv)
    threads.prepare_environment()  # before anything imports torch: OpenMP reads it once (core/threads.py)
    if argv[:1] == ["weights"]:  # its own parser (core/finetune/weights_cli.py), --help included
        from ..core.finetune.weights_cli import main as weights_main

        return weights_main(argv[1:])
    args = build_parser().parse_args(argv)  # exits with 2 on bad usage
    threads.configure(getattr(args, "threads", None))
    if args.command in JOBS:
        run = JOBS[args.command][2]
        return run_job(lambda fb: run(args, fb), as_json=args.json, debug=args.debug, quiet=args.quiet,
                       wording=lambda message: as_options(message, args.option_strings))
    from . import about

    try:
        result = {"info": lambda: about.model_info(args.model or args.model_option),
                  "version": about.versions, "diagnostics": about.diagnostics}[args.command]()
    except Exception as exc:  # noqa: BLE001 - GeoMLError's message, or a short cause
        return fail(str(exc), args.debug)
    if args.json:
        print_result(result, True)
    else:
        print(about.as_text(result))
    return EXIT_OK
