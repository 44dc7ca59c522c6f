"""A loopback HTTP server (127.0.0.1) serving weight files the tests make, and helpers to make them.

The server honours ``Range`` requests (206), can cut a connection after a given
number of bytes (``cut_after``), records every request line and ``Range``
header, and answers proxy-style requests (an absolute URL in the request line)
so tests can check that proxy settings are passed through.
"""
from __future__ import annotations

import hashlib
import http.server
import threading
from urllib.parse import urlsplit


class WeightsServer:
    def __init__(self):
        self.files: dict = {}  # path ("/x.pth") → bytes
        self.requests: list = []  # (request line path, Range header or None)
        self.cut_after: dict = {}  # path → bytes sent before the connection is cut (once)
        self.ignore_range = False  # True: answer every request with the whole file (200), as some servers do
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # noqa: N802
                server.requests.append((self.path, self.headers.get("Range")))
                path = urlsplit(self.path).path if self.path.startswith("http") else self.path
                data = server.files.get(path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes=") and not server.ignore_range:
                    start = int(rng[6:].split("-")[0])
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut = server.cut_after.pop(path, None)
                if cut is not None:
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def add(self, name: str, data: bytes) -> tuple[str, str]:
        """Serve ``data`` as ``/name`` where name gets torchvision's ``-<sha256 prefix>`` suffix; (url, prefix)."""
        prefix = hashlib.sha256(data).hexdigest()[:8]
        stem, ext = name.rsplit(".", 1)
        path = f"/{stem}-{prefix}.{ext}"
        self.files[path] = data
        return self.url(path), prefix


def state_bytes(state) -> bytes:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def torchvision_state(arch: str, seed: int = 0) -> dict:
    """torchvision's layout: a bare state dict of the ImageNet ResNet (RGB conv1, 1000-class fc)."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    return getattr(torchvision.models, arch)(weights=None).state_dict()


def torchgeo_state(arch: str, in_chans: int, seed: int = 1) -> dict:
    """TorchGeo's layout: a timm ResNet state dict (torchvision's tensor names) for ``in_chans`` bands, no fc."""
    import torch

    state = {k: v for k, v in torchvision_state(arch, seed).items() if not k.startswith("fc.")}
    g = torch.Generator().manual_seed(seed)
    state["conv1.weight"] = torch.randn(64, in_chans, 7, 7, generator=g) * 0.05
    return state
