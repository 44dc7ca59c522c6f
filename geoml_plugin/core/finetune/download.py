"""Download one weights file into the cache: progress, Cancel, resume, checksum, then rename.

``download_file(url, dest, hash_prefix=…, sha256=…, feedback=…)``:

* streams into ``dest + ".part"`` beside the final file, reporting progress
  through the job's :class:`~.progress.Feedback` (so Cancel stops it within one
  chunk: :class:`JobCancelled`);
* resumes: a ``.part`` left by a cut connection or a Cancel is continued with
  an HTTP ``Range`` request (a server that ignores it sends the whole file,
  which is then written from the start);
* verifies the SHA-256 (the full digest, or torchvision's file-name prefix)
  of the complete file; a mismatch deletes the ``.part`` and caches nothing;
* only then renames the ``.part`` to ``dest`` (atomic on one file system), so
  a partial or tampered file is never found under the cache name;
* goes through the proxies given, else the standard ``http_proxy`` /
  ``https_proxy`` / ``no_proxy`` environment variables (``urllib``'s
  ``getproxies``); the QGIS plugin passes QGIS's proxy settings.

Core code never calls this unasked: a job downloads only when the user allowed
it (``DOWNLOAD_WEIGHTS``, or the dialog's question).
"""
from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from typing import Optional

from ..errors import InputError, JobCancelled
from ..progress import Feedback, ensure_feedback

CHUNK = 256 * 1024
USER_AGENT = "GeoML-QGIS-plugin"


class ChecksumError(InputError):
    """The downloaded file's SHA-256 is not the published one; nothing was cached."""


def sha256_of(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def checksum_ok(digest: str, sha256: str = "", hash_prefix: str = "") -> bool:
    """True when ``digest`` is the full ``sha256`` or starts with ``hash_prefix`` (torch.hub's check_hash rule)."""
    if sha256:
        return digest == sha256.lower()
    if hash_prefix:
        return digest.startswith(hash_prefix.lower())
    return True


def expected_text(sha256: str = "", hash_prefix: str = "") -> str:
    if sha256:
        return f"SHA-256 {sha256}"
    if hash_prefix:
        return f"SHA-256 starting with {hash_prefix}"
    return "no published checksum"


def check_clause(sha256: str = "", hash_prefix: str = "") -> str:
    """", check that its SHA-256 …" for a hint that tells a user to fetch the file by hand (empty without a
    published checksum)."""
    if sha256:
        return f", check that its SHA-256 is {sha256}"
    if hash_prefix:
        return f", check that its SHA-256 starts with {hash_prefix}"
    return ""


def build_opener(proxies: Optional[dict] = None):
    """A urllib opener using ``proxies`` ({'http': url, 'https': url}), else the environment's proxy variables."""
    handler = urllib.request.ProxyHandler(proxies if proxies is not None else urllib.request.getproxies())
    return urllib.request.build_opener(handler)


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def download_file(url: str, dest: str, sha256: str = "", hash_prefix: str = "",
                  feedback: Optional[Feedback] = None, proxies: Optional[dict] = None,
                  timeout: float = 30.0) -> str:
    """Download ``url`` to ``dest`` (see the module docstring); returns ``dest``."""
    fb = ensure_feedback(feedback)
    folder = os.path.dirname(os.path.abspath(dest))
    os.makedirs(folder, exist_ok=True)
    part = dest + ".part"
    have = os.path.getsize(part) if os.path.isfile(part) else 0
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if have:
        req.add_header("Range", f"bytes={have}-")
    name = os.path.basename(dest)
    try:
        resp = build_opener(proxies).open(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the .part is complete already (or longer than the file): verify it
            return _finish(part, dest, sha256, hash_prefix, url)
        raise _offline(url, dest, sha256, hash_prefix, f"the server answered {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise _offline(url, dest, sha256, hash_prefix, str(getattr(exc, "reason", exc))) from exc
    with resp:
        resumed = have and resp.status == 206
        if not resumed:
            have = 0
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None and length.isdigit() else None
        if resumed:
            fb.log(f"Resuming the download of {name} at {_mb(have)}.")
        fb.log(f"Downloading {url}" + (f" ({_mb(total)})" if total else "") + f" to {folder}.")
        done, next_log = have, 0.0
        try:
            with open(part, "ab" if resumed else "wb") as out:
                while True:
                    fb.check()
                    block = resp.read1(CHUNK)  # what has arrived (≤ CHUNK): Cancel is seen on slow links too
                    if not block:
                        break
                    out.write(block)
                    done += len(block)
                    frac = done / total if total else 0.0
                    if frac >= next_log or not total:
                        fb.progress(min(frac, 1.0), f"downloading {name}: {_mb(done)}"
                                    + (f" of {_mb(total)}" if total else ""))
                        next_log = frac + 0.01  # about a hundred progress reports
        except JobCancelled:
            fb.log(f"Download cancelled at {_mb(done)}; the part is kept in {part} and a new download resumes it.")
            raise
        except (OSError, http.client.HTTPException) as exc:  # connection cut mid-transfer: the .part stays
            raise _offline(url, dest, sha256, hash_prefix,
                           f"the connection broke after {_mb(done)} ({exc}); downloading again resumes") from exc
    if total is not None and done < total:
        raise _offline(url, dest, sha256, hash_prefix,
                       f"the connection broke after {_mb(done)} of {_mb(total)}; downloading again resumes")
    fb.progress(1.0, f"downloaded {name}: {_mb(done)}; checking its SHA-256")
    return _finish(part, dest, sha256, hash_prefix, url)


def _finish(part: str, dest: str, sha256: str, hash_prefix: str, url: str) -> str:
    digest = sha256_of(part)
    if not checksum_ok(digest, sha256, hash_prefix):
        os.remove(part)
        raise ChecksumError(
            f"The file downloaded from {url} has SHA-256 {digest}, not the published {expected_text(sha256, hash_prefix)}"
            "; it was deleted and nothing was cached.",
            "The server or a proxy may have sent a different file; try again later or download it by hand.")
    os.replace(part, dest)
    return dest


def _offline(url: str, dest: str, sha256: str, hash_prefix: str, why: str) -> InputError:
    return InputError(
        f"Could not download {os.path.basename(dest)} from {url}: {why}.",
        f"On a computer with internet, download {url}{check_clause(sha256, hash_prefix)}, and add it with "
        f"Weights… → Add file… (or geoml weights add FILE, or copy it to {os.path.dirname(os.path.abspath(dest))}).")
