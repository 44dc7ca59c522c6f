"""Issue 21 point 1: GAN tiles placed in a geographic map CRS get a shaded relief in ground units.

The tile is written in the map's CRS (degrees); QGIS's hillshade divides height differences by the pixel size in
CRS units, so without a z-factor for degrees every slope is near vertical and the relief renders black. The test
renders the panel's "shaded relief" layer with QGIS, as the canvas would, and compares it with the same model's
relief in its own projected CRS."""
import numpy as np
import pytest
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsMapRendererSequentialJob,
    QgsMapSettings,
    QgsPointXY,
    QgsProject,
    QgsRectangle,
    QgsSettings,
)
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor

from tests.gan_helpers import FakePlugin, one_torch_thread, tiny_generator_model  # noqa: F401


@pytest.fixture(autouse=True)
def _panel_settings():
    """The panel remembers its style and model in QGIS's settings: leave them as they were for other tests."""
    keep = {k: QgsSettings().value("geoml/gan_panel/" + k) for k in ("style", "tile", "model")}
    yield
    for k, v in keep.items():
        if v is None:
            QgsSettings().remove("geoml/gan_panel/" + k)
        else:
            QgsSettings().setValue("geoml/gan_panel/" + k, v)


def _render(layer, size=160) -> np.ndarray:
    """The layer drawn alone over white, as an (h, w, 3) uint8 array."""
    ms = QgsMapSettings()
    ms.setLayers([layer])
    ms.setDestinationCrs(layer.crs())
    ext = layer.extent()
    ext.scale(0.8)  # inside the tile: no white margin
    ms.setExtent(ext)
    ms.setOutputSize(QSize(size, size))
    ms.setBackgroundColor(QColor(255, 255, 255))
    job = QgsMapRendererSequentialJob(ms)
    job.start()
    job.waitForFinished()
    img = job.renderedImage().convertToFormat(job.renderedImage().Format.Format_RGB32)
    ptr = img.constBits()
    ptr.setsize(img.sizeInBytes())
    return np.frombuffer(ptr, np.uint8).reshape(img.height(), img.bytesPerLine() // 4, 4)[:, :img.width(), :3].copy()


def _relief_in(crs_id, point, qtbot, qgis_iface, qgis_canvas, model, folder):
    from geoml_plugin.gui.gan_panel import GanPanel

    crs = QgsCoordinateReferenceSystem(crs_id)
    QgsProject.instance().setCrs(crs)
    qgis_canvas.setDestinationCrs(crs)
    qgis_canvas.setExtent(QgsRectangle(point.x() - 1, point.y() - 1, point.x() + 1, point.y() + 1))
    panel = GanPanel(FakePlugin(qgis_iface), qgis_canvas)
    qtbot.addWidget(panel)
    panel.modelFile.setFilePath(model)
    panel.folderWidget.setFilePath(str(folder))
    panel.tileSizeCombo.setCurrentText("64")
    panel.styleCombo.setCurrentIndex(panel.styleCombo.findData("hillshade"))
    panel.seedSpin.setValue(5)
    assert panel.generate_at(point) is not None, panel.statusLabel.text()
    layer = QgsProject.instance().mapLayer(panel.shown[-1].layers[0][0])
    assert layer.name() == "shaded relief" and layer.renderer().type() == "hillshade"
    return layer, _render(layer)


@pytest.mark.parametrize("units", ["", "m"])
def test_shaded_relief_of_a_tile_in_degrees_renders_like_in_the_models_crs(
        units, qtbot, qgis_iface, qgis_canvas, qgis_new_project, tmp_path):
    # a DTM of 2 m pixels in UTM 18N whose band names no unit (as the real opengeos DTM): elevation by its name
    model = tiny_generator_model(tmp_path / "dtm_gan.safetensors", mean=15.0, std=0.5, pixel=2.0, epsg=26918,
                                 units=units)
    geo, geo_img = _relief_in("EPSG:4326", QgsPointXY(-74.5, 41.0), qtbot, qgis_iface, qgis_canvas, model,
                              tmp_path / "geo")
    assert geo.crs().authid() == "EPSG:4326" and geo.rasterUnitsPerPixelX() < 1e-3  # written in degrees
    utm, utm_img = _relief_in("EPSG:26918", QgsPointXY(542000, 4539000), qtbot, qgis_iface, qgis_canvas, model,
                              tmp_path / "utm")
    grey = geo_img.mean(axis=2)
    assert grey.std() > 2.0, "the shaded relief renders as one uniform colour"
    assert (grey < 40).mean() < 0.05, f"{(grey < 40).mean():.0%} of the shaded relief renders black"
    # the same terrain statistics give the same overall brightness as in the model's own metric CRS
    assert grey.mean() == pytest.approx(utm_img.mean(axis=2).mean(), abs=25)
