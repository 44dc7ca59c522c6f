"""The dock panels fit a narrow (300 px) dock and scroll in a short one, without clipped or squeezed text."""
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QAbstractButton, QLabel, QScrollArea

from tests.gan_helpers import FakePlugin, tiny_generator_model

# the longest device badge (deps.summary_of): a CPU-only PyTorch beside an NVIDIA GPU
LONG_BADGE = "CPU only — jobs will be slower (NVIDIA GPU found: install the CUDA build of PyTorch)"


class DockPlugin(FakePlugin):
    def __init__(self, iface):
        super().__init__(iface)
        self.dialogs = {}


def _show(qtbot, widget, width, height):
    widget.resize(width, height)
    widget.show()
    qtbot.waitExposed(widget)
    qtbot.wait(50)


def _texts_fit(widget):
    """Buttons at least as wide as their text needs, wrapped labels at least as tall as their text needs."""
    bad = []
    for w in widget.findChildren(QAbstractButton) + widget.findChildren(QLabel):
        if not w.isVisible() or not w.text():
            continue
        if isinstance(w, QAbstractButton) and w.width() < w.sizeHint().width():
            bad.append((w.objectName(), w.text(), w.width(), w.sizeHint().width()))
        if isinstance(w, QLabel) and w.wordWrap() and w.height() < w.heightForWidth(w.width()):
            bad.append((w.objectName(), w.text(), w.height(), w.heightForWidth(w.width())))
    return bad


def test_fewshot_panel_fits_a_300px_dock_even_with_the_longest_device_badge(qtbot, qgis_iface, qgis_new_project):
    from geoml_plugin.gui.fewshot_panel import open_panel

    dock = open_panel(DockPlugin(qgis_iface))
    qtbot.addWidget(dock)
    panel = dock.panel
    panel.set_device_badge(LONG_BADGE)
    # before: the badge did not wrap (the panel was at least ~700 px wide with this text, 450 with 'CPU only'),
    # and the Undo / Remove class / Save as layer row alone needed ~390 px
    assert panel.minimumSizeHint().width() <= 280, panel.minimumSizeHint()
    dock.setFloating(True)
    _show(qtbot, dock, 300, 400)
    assert panel.width() <= dock.width()
    assert _texts_fit(panel) == []
    panel.cleanup()


def test_fewshot_class_names_get_the_width_of_the_class_table(qtbot, qgis_iface, qgis_canvas, qgis_new_project):
    from geoml_plugin.gui.fewshot_panel import FewShotPanel

    panel = FewShotPanel(FakePlugin(qgis_iface), qgis_canvas)
    qtbot.addWidget(panel)
    for name in ("Water", "Cropland", "Urban settlement"):
        panel.classCombo.setCurrentText(name)
        panel.add_typed_class()
    _show(qtbot, panel, 340, 900)
    table = panel.classTable
    # before: 'Cropland' and 'Urban …' were elided in a narrow first column beside a wide column of counts
    need = table.fontMetrics().horizontalAdvance("Urban settlement") + table.iconSize().width() + 16
    assert table.columnWidth(0) >= need, (table.columnWidth(0), need)
    assert table.columnWidth(0) > table.columnWidth(1)
    panel.cleanup()


def test_fewshot_dock_scrolls_when_short(qtbot, qgis_iface, qgis_new_project):
    from geoml_plugin.gui.fewshot_panel import open_panel

    plugin = DockPlugin(qgis_iface)
    dock = open_panel(plugin)
    qtbot.addWidget(dock)
    assert isinstance(dock.widget(), QScrollArea) and dock.widget().widget() is dock.panel
    # before: the dock could not be shorter than the whole panel (~670 px): cut off on a laptop screen
    assert dock.minimumSizeHint().height() < 300, dock.minimumSizeHint()
    dock.panel.cleanup()


def test_gan_panel_keeps_its_wrapped_texts_whole_in_a_short_narrow_dock(qtbot, qgis_iface, qgis_canvas,
                                                                         qgis_new_project, tmp_path):
    from geoml_plugin.gui.gan_panel import GanPanel

    panel = GanPanel(FakePlugin(qgis_iface), qgis_canvas)
    qtbot.addWidget(panel)
    panel.modelFile.setFilePath(tiny_generator_model(tmp_path / "gen.safetensors"))
    panel.statusLabel.setText("128×128 px tile, seed 7: GeoTIFF in 35 ms, on the map in 120 ms.")
    assert panel.minimumSizeHint().width() <= 300
    # before: at 300×400 the model description got 29 px for its 3 lines and ran into the Tile size row
    _show(qtbot, panel, 300, 400)
    assert _texts_fit(panel) == []
    assert isinstance(panel.widget(), QScrollArea)
    # the status sits under the buttons, not centred in the free space
    assert panel.statusLabel.alignment() & Qt.AlignmentFlag.AlignTop
    panel.set_tool_active(False)


def test_gan_style_box_shows_its_whole_choice_in_a_narrow_dock(qtbot, qgis_iface, qgis_canvas, qgis_new_project,
                                                               tmp_path):
    """Issue 21: the Style box ('Terrain colours + hillshade') was cut off in the dock."""
    from qgis.PyQt.QtWidgets import QComboBox

    from geoml_plugin.gui.gan_panel import GanPanel

    panel = GanPanel(FakePlugin(qgis_iface), qgis_canvas)
    qtbot.addWidget(panel)
    panel.modelFile.setFilePath(tiny_generator_model(tmp_path / "gen.safetensors"))
    _show(qtbot, panel, 300, 500)
    viewport = panel.widget().viewport()
    for combo in (panel.styleCombo, panel.tileSizeCombo):
        for i in range(combo.count()):
            combo.setCurrentIndex(i)
            qtbot.wait(10)
            need = combo.fontMetrics().horizontalAdvance(combo.currentText()) + 30  # text + arrow
            assert combo.width() >= need, (combo.currentText(), combo.width(), need)
            right = combo.mapTo(viewport, combo.rect().topRight()).x()
            assert right <= viewport.width(), (combo.currentText(), right, viewport.width())
    assert isinstance(panel.styleCombo, QComboBox)
    panel.set_tool_active(False)
