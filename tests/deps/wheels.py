"""Build tiny pure-Python wheels for installer tests (no network, no build backend)."""
from __future__ import annotations

import base64
import hashlib
import os
import zipfile
from pathlib import Path


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(folder, name: str, version: str, modules: dict, requires=()) -> Path:
    """Write ``<name>-<version>-py3-none-any.whl`` with ``modules`` = {"pkg/__init__.py": "source"}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    meta += [f"Requires-Dist: {r}" for r in requires]
    files = dict(modules)
    files[f"{info}/METADATA"] = "\n".join(meta) + "\n"
    files[f"{info}/WHEEL"] = "Wheel-Version: 1.0\nGenerator: geoml-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    files[f"{info}/top_level.txt"] = "\n".join(sorted({m.split("/")[0] for m in modules})) + "\n"
    record = []
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for arc, text in files.items():
            data = text.encode()
            zf.writestr(arc, data)
            record.append(f"{arc},{_record_hash(data)},{len(data)}")
        record.append(f"{info}/RECORD,,")
        zf.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return path


def local_wheels(folder) -> Path:
    """A folder of wheels: geomltest-a (needs numpy and geomltest-b>=2), geomltest-b 2.0, a fake numpy,
    and geomltest-broken (imports fail)."""
    folder = Path(folder)
    make_wheel(folder, "geomltest-a", "1.0", {"geomltest_a/__init__.py": "import geomltest_b\nVALUE = 42\n"},
               requires=["numpy", "geomltest-b>=2"])
    make_wheel(folder, "geomltest-b", "2.0", {"geomltest_b/__init__.py": "B = 2\n"})
    make_wheel(folder, "numpy", "1.0.0", {"numpy/__init__.py": "raise ImportError('the fake numpy was imported')\n"})
    make_wheel(folder, "geomltest-broken", "1.0",
               {"geomltest_broken/__init__.py": "raise ImportError('DLL load failed while importing _C')\n"})
    return folder


# pip must see only the test's folder, never this machine's pip configuration or wheel cache
ISOLATED_PIP_ENV = {"PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": "", "PIP_NO_CACHE_DIR": "1"}


class HangingServer:
    """A local 'package index' that accepts connections and never answers: pip waits until cancelled."""

    def __init__(self):
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.conns = []
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/simple"
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self):
        self._stop = True
        for c in self.conns:
            c.close()
        self.sock.close()
