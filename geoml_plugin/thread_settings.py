"""GeoML's CPU thread policy inside QGIS (desktop and ``qgis_process``): see ``core/threads.py``.

The thread count for jobs can be set in QGIS's settings under ``geoml/threads`` (Settings › Options ›
Advanced; 0 or empty = automatic: the physical cores). It is read when the Processing provider loads
(before any job imports torch) and again when a job starts (a GeoMLTask is made, a Processing
algorithm is prepared), so a change applies to the next job. ``GEOML_THREADS`` and ``OMP_NUM_THREADS`` in
the environment QGIS starts from take precedence. Measured on 2 cores, leaving a core to QGIS (one
thread instead of two) made the job slower and the main thread no more responsive, so the automatic
count is the same as on the command line.
"""
from __future__ import annotations

SETTING = "geoml/threads"


def configure_from_qgis() -> None:
    """Prepare OpenMP's environment (a no-op once torch is loaded) and choose the job threads."""
    from .core import threads

    setting = None
    try:
        from qgis.core import QgsSettings

        setting = QgsSettings().value(SETTING, "")
    except Exception:  # noqa: BLE001 - no settings (a bare interpreter): automatic
        pass
    threads.configure(setting)
