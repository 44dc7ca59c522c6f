"""How a command-line job talks to its user: progress, log lines, Ctrl-C, the result and the exit status.

* On a terminal a tqdm progress bar (on stderr; plain lines when tqdm is not installed), log lines above it.
* Not on a terminal (a log file, a pipe, a batch system): plain lines, progress at most every 10 s.
* ``--json``: the log goes to stderr and stdout holds only the result, as JSON.
* Ctrl-C sets the job's cancel flag, as Cancel does in QGIS: the job stops at its next progress report with
  :class:`JobCancelled` and removes its temporary files; a second Ctrl-C interrupts at once.
* Exit status: 0 done, 1 the job failed (its message on stderr, the traceback only with ``--debug``),
  2 bad usage (argparse), 130 cancelled.
"""
from __future__ import annotations

import dataclasses
import json
import signal
import sys
import time
import traceback
from typing import Any, Callable, Optional

from ..core.errors import GeoMLError, JobCancelled
from ..core.progress import Feedback

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED = 0, 1, 2, 130
PLAIN_EVERY_S = 10.0


def is_main_rank() -> bool:
    """True except on the ranks > 0 of a torchrun job: only rank 0 prints the result."""
    from ..core.distributed import launch_env

    env = launch_env()
    return env is None or env.rank == 0


class Console:
    """Progress and log output of one job, and its cancel flag."""

    def __init__(self, as_json: bool = False, quiet: bool = False):
        self.out = sys.stderr if as_json else sys.stdout
        self.quiet = quiet or not is_main_rank()
        self.cancel_requested = False
        self._bar = None
        self._last_plain = 0.0
        self._last_pct = -1
        tty = self.out.isatty() and sys.stderr.isatty()
        if tty and not self.quiet:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=100, unit="%", bar_format="{l_bar}{bar}| {elapsed}<{remaining}",
                                 dynamic_ncols=True, leave=False)

    # -- output --------------------------------------------------------------
    def log(self, message: str) -> None:
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.write(message, file=self.out)
        else:
            print(message, file=self.out, flush=True)

    def progress(self, fraction: float, message: str) -> None:
        if self.quiet:
            return
        pct = int(fraction * 100)
        if self._bar is not None:
            self._bar.n = min(100.0, fraction * 100.0)
            if message:
                self._bar.set_description_str(message[:40], refresh=False)
            self._bar.refresh()
            return
        now = time.monotonic()
        if pct != self._last_pct and (now - self._last_plain >= PLAIN_EVERY_S or fraction >= 1.0):
            self._last_plain, self._last_pct = now, pct
            print(f"{fraction * 100:5.1f}%  {message}", file=self.out, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def feedback(self) -> Feedback:
        return Feedback(self.progress, self.log, lambda: self.cancel_requested)

    # -- Ctrl-C --------------------------------------------------------------
    def _on_sigint(self, signum, frame) -> None:
        if self.cancel_requested:  # the second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.cancel_requested = True
        print("Cancelling… (Ctrl-C again to stop at once)", file=sys.stderr, flush=True)


def to_jsonable(value: Any) -> Any:
    """A job result (dataclass, list of them) as plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        if isinstance(value, float) and value != value:
            return None
        return value
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return to_jsonable(value.tolist())
    return str(value)


def summary_lines(result: Any) -> list:
    """The result in a few readable lines: its short fields (paths, counts, metrics), long lists left out."""
    if isinstance(result, list):
        return [line for r in result for line in summary_lines(r)]
    data = to_jsonable(result)
    if not isinstance(data, dict):
        return [str(data)]
    lines = []
    for key, value in data.items():
        if value in (None, "", [], {}) or (isinstance(value, (list, dict)) and len(value) > 12):
            continue
        if isinstance(value, list) and any(isinstance(v, (list, dict)) for v in value):  # histories: --json
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {_short(v)}" for k, v in value.items() if not isinstance(v, (list, dict)))
        elif isinstance(value, float):
            value = _short(value)
        elif isinstance(value, str) and len(value) > 160:  # a CRS's WKT: --json has it whole
            value = value[:157] + "…"
        lines.append(f"{key}: {value}")
    return lines


def _short(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def run_job(job: Callable[[Feedback], Any], as_json: bool = False, debug: bool = False,
            quiet: bool = False, wording: Optional[Callable[[str], str]] = None) -> int:
    """Run ``job(feedback)`` with progress and Ctrl-C handling; print its result; the exit status.
    ``wording``: turns a failed job's message into the command line's words (``options.as_options``)."""
    from ..core.distributed import is_distributed

    console = Console(as_json, quiet)
    previous = None
    if not is_distributed():  # under torchrun every worker gets Ctrl-C as KeyboardInterrupt (core/distributed.py)
        previous = signal.signal(signal.SIGINT, console._on_sigint)
    try:
        result = job(console.feedback())
    except (JobCancelled, KeyboardInterrupt):
        console.close()
        print("Cancelled: no output was written.", file=sys.stderr, flush=True)
        return EXIT_CANCELLED
    except GeoMLError as exc:
        console.close()
        return fail(wording(str(exc)) if wording else str(exc), debug)
    except Exception as exc:  # noqa: BLE001 - a bug or an input no check caught: a short message, not a traceback
        console.close()
        cause = (str(exc).strip().splitlines() or [""])[0][:200]
        return fail(f"GeoML hit an internal error: {type(exc).__name__}{': ' + cause if cause else ''}. "
                    "Run again with --debug for the traceback and include it in a bug report.", debug)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    console.close()
    print_result(result, as_json)
    return EXIT_OK


def fail(message: str, debug: bool = False) -> int:
    if debug:
        traceback.print_exc()
    print(f"geoml: error: {message}", file=sys.stderr, flush=True)
    return EXIT_FAILED


def print_result(result: Any, as_json: bool, out: Optional[Any] = None) -> None:
    """The result on stdout (rank 0 only): JSON with ``--json``, else a few readable lines."""
    if not is_main_rank():
        return
    out = out or sys.stdout
    if as_json:
        json.dump(to_jsonable(result), out, indent=2, ensure_ascii=False)
        out.write("\n")
    else:
        for line in summary_lines(result):
            print(line, file=out)
    out.flush()
