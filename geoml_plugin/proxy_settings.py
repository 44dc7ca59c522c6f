"""QGIS's proxy settings as a ``urllib`` proxies dict, for core downloads started from the plugin.

QGIS keeps its proxy (Settings › Options › Network) in
``QgsNetworkAccessManager``'s fallback proxy. An HTTP proxy there is passed
to the core downloader for http and https; with no proxy set (or the
system/default one) ``None`` is returned and the core uses the standard
``http_proxy`` / ``https_proxy`` / ``no_proxy`` variables.
"""
from __future__ import annotations

from typing import Optional
from urllib.parse import quote


def qgis_proxies() -> Optional[dict]:
    from qgis.core import QgsNetworkAccessManager
    from qgis.PyQt.QtNetwork import QNetworkProxy

    proxy = QgsNetworkAccessManager.instance().fallbackProxy()
    if proxy.type() not in (QNetworkProxy.ProxyType.HttpProxy, QNetworkProxy.ProxyType.HttpCachingProxy) \
            or not proxy.hostName():
        return None
    auth = ""
    if proxy.user():
        auth = quote(proxy.user(), safe="") + (":" + quote(proxy.password(), safe="") if proxy.password() else "") + "@"
    url = f"http://{auth}{proxy.hostName()}:{proxy.port()}"
    return {"http": url, "https": url}
