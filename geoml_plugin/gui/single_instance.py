"""One dialog per kind, re-shown when opened again.

Kept in the plugin's ``dialogs`` (closed at unload) or, without a plugin
object (tests, scripts), in this module. The docked panels keep theirs in
``plugin.dialogs`` too but are shown as docks (``open_panel`` in their modules).
"""
from __future__ import annotations

_standalone: dict = {}


def main_window(plugin):
    iface = getattr(plugin, "iface", None) if plugin is not None else None
    return iface.mainWindow() if iface is not None else None


def _alive(dlg) -> bool:
    try:
        dlg.isVisible()
    except RuntimeError:  # deleted
        return False
    return True


def show_single(plugin, key: str, factory):
    """Show the dialog of kind ``key``, made by ``factory()`` the first time (or after it was deleted)."""
    kept = plugin.dialogs if plugin is not None and hasattr(plugin, "dialogs") else _standalone
    dlg = kept.get(key)
    if dlg is None or not _alive(dlg):
        dlg = factory()
        kept[key] = dlg
    dlg.show()
    dlg.raise_()
    dlg.activateWindow()
    return dlg
