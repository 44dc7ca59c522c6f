"""``geoml weights list | download NAME… | add FILE… [--name NAME] | verify [NAME…] | remove NAME…``

The terminal side of the *Weights…* manager: which catalogue weights are cached, where and how big;
download (this command is the consent; progress bar, Ctrl+C cancels and a later download resumes),
add a file downloaded by hand (found by its name or checksum, checked, copied into the cache),
verify against the published checksum, remove. Proxies: the standard ``http_proxy`` / ``https_proxy``
/ ``no_proxy`` variables. Exit status 1 when a download or a verification fails.
"""
from __future__ import annotations

import argparse
import os
import sys

from ..errors import GeoMLError
from ..progress import Feedback
from .weights_catalog import CATALOGUE, find_entry


def _bar(stream=sys.stderr) -> Feedback:
    def progress(fraction: float, message: str) -> None:
        n = int(fraction * 30)
        stream.write(f"\r[{'#' * n}{' ' * (30 - n)}] {fraction * 100:5.1f}% {message[:60]:<60}")
        if fraction >= 1.0:
            stream.write("\n")
        stream.flush()

    return Feedback(progress, lambda m: stream.write(f"\n{m}\n"))


def _entries(names):
    out = []
    for n in names or [e.name for e in CATALOGUE]:
        e = find_entry(n)
        if e is None:
            raise SystemExit(f"Unknown weights '{n}'. Known: " + ", ".join(x.name for x in CATALOGUE))
        out.append(e)
    return out


def _list(args) -> int:
    from .pretrained import cache_dir, cached_path

    print(f"Cache folder: {cache_dir()}")
    for e in CATALOGUE:
        path = cached_path(e)
        have = f"cached {os.path.getsize(path) / 1e6:.1f} MB" if os.path.isfile(path) else "not cached"
        size = f"{e.size_mb:.1f} MB" if e.size_published else f"~{e.size_mb:.0f} MB"
        print(f"{e.name:38s} {e.arch:9s} {len(e.bands):2d} bands  {size:>9s}  {e.licence.split(' ')[0]:11s} {have}")
    return 0


def _download(args) -> int:
    from .pretrained import ensure_weights

    status = 0
    for e in _entries(args.names):
        try:
            print(ensure_weights(e, allow_download=True, feedback=_bar()))
        except GeoMLError as exc:
            print(f"\n{exc}", file=sys.stderr)
            status = 1
    return status


def _add(args) -> int:
    from .pretrained import add_local_file

    status = 0
    for f in args.files:
        try:
            entry, dest = add_local_file(f, args.name)
            print(f"{entry.name}: added {dest}")
        except GeoMLError as exc:
            print(str(exc), file=sys.stderr)
            status = 1
    return status


def _verify(args) -> int:
    from .pretrained import cached_path, verify_cached

    status = 0
    for e in _entries(args.names):
        if not os.path.isfile(cached_path(e)):
            if args.names:
                print(f"{e.name}: not cached")
                status = 1
            continue
        ok, digest = verify_cached(e)
        print(f"{e.name}: {'OK' if ok else 'MISMATCH'} sha256 {digest} (published prefix {e.hash_prefix})")
        status |= 0 if ok else 1
    return status


def _remove(args) -> int:
    from .pretrained import cached_path

    for e in _entries(args.names):
        for p in (cached_path(e), cached_path(e) + ".part"):
            if os.path.isfile(p):
                os.remove(p)
                print(f"removed {p}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="geoml weights", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="every catalogue entry: cached?, size, licence")
    for cmd in ("download", "verify", "remove"):
        sub.add_parser(cmd).add_argument("names", nargs="*" if cmd == "verify" else "+")
    add = sub.add_parser("add", help="cache files downloaded by hand, after checking their published SHA-256")
    add.add_argument("files", nargs="+")
    add.add_argument("--name", default="", help="the catalogue entry (default: found by the file's name or checksum)")
    args = ap.parse_args(argv)
    run = {"list": _list, "download": _download, "add": _add, "verify": _verify, "remove": _remove}[args.cmd]
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
