"""QGIS layer styles (QML) written as plain text beside GeoML's outputs.

QGIS loads ``name.qml`` next to ``name.tif`` as the layer's default style, so
a class raster opens paletted with class names and colours, and a continuous
raster with a colour ramp, however it is opened: from a dialog, Processing,
``qgis_process`` or drag and drop. Generated here, without QGIS, so core jobs
can write it together with the raster.
"""
from __future__ import annotations

import math
from typing import Optional
from xml.sax.saxutils import quoteattr

from .classes import ClassInfo

_HEAD = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n<qgis version=\"3.22.0\" styleCategories=\"AllStyleCategories\">\n  <pipe>\n"
_TAIL = (
    '    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>\n'
    '    <huesaturation saturation="0" grayscaleMode="0" colorizeOn="0" colorizeRed="255" colorizeGreen="128" colorizeBlue="128" colorizeStrength="100" invertColors="0"/>\n'
    '    <rasterresampler maxOversampling="2"/>\n'
    "  </pipe>\n  <blendMode>0</blendMode>\n</qgis>\n"
)

# viridis, 9 stops
VIRIDIS = ["#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725"]
TERRAIN = ["#0b6623", "#3f9b0b", "#a4c639", "#e1d89f", "#c2a878", "#8b6b4a", "#6e5a4f", "#bfbfbf", "#ffffff"]


def paletted_qml(classes: list[ClassInfo], band: int = 1) -> str:
    entries = "\n".join(
        f"        <paletteEntry value=\"{c.value}\" color=\"{c.color}\" alpha=\"255\" label={quoteattr(c.name)}/>"
        for c in classes
    )
    body = (
        f'    <rasterrenderer type="paletted" band="{band}" opacity="1" alphaBand="-1" nodataColor="">\n'
        "      <rasterTransparency/>\n"
        f"      <colorPalette>\n{entries}\n      </colorPalette>\n"
        "    </rasterrenderer>\n"
    )
    return _HEAD + body + _TAIL


def legend_format(vmin: float, vmax: float, steps: int) -> str:
    """A format for legend values from ``vmin`` to ``vmax`` in ``steps`` steps: plain decimals, as many as tell the
    steps apart (1730, 1798 … for biomass in g/m², 0.12, 0.25 … for a fraction), never 1.73e+03."""
    step = abs(vmax - vmin) / max(1, steps)
    decimals = 0 if not math.isfinite(step) or step <= 0 else max(0, min(6, 1 - math.floor(math.log10(step))))
    return "{:.%df}" % decimals


def pseudocolor_qml(vmin: float, vmax: float, ramp=None, band: int = 1, label_fmt: Optional[str] = None) -> str:
    ramp = ramp or VIRIDIS
    if not vmax > vmin:
        vmax = vmin + 1.0
    n = len(ramp)
    label_fmt = label_fmt or legend_format(vmin, vmax, n - 1)
    items = "\n".join(
        f'          <item value="{vmin + (vmax - vmin) * i / (n - 1):.6g}" color="{col}" alpha="255" '
        f'label="{label_fmt.format(vmin + (vmax - vmin) * i / (n - 1))}"/>'
        for i, col in enumerate(ramp)
    )
    body = (
        f'    <rasterrenderer type="singlebandpseudocolor" band="{band}" opacity="1" alphaBand="-1" '
        f'classificationMin="{vmin:.6g}" classificationMax="{vmax:.6g}" nodataColor="">\n'
        "      <rasterTransparency/>\n"
        "      <rastershader>\n"
        f'        <colorrampshader colorRampType="INTERPOLATED" classificationMode="1" clip="0" '
        f'minimumValue="{vmin:.6g}" maximumValue="{vmax:.6g}">\n'
        f"{items}\n"
        "        </colorrampshader>\n      </rastershader>\n    </rasterrenderer>\n"
    )
    return _HEAD + body + _TAIL


MULTIPLY = 6  # QgsPainting::BlendMultiply, as QGIS stores layer blend modes in a style


def hillshade_qml(band: int = 1, zfactor: float = 1.0, azimuth: float = 315.0, altitude: float = 45.0,
                  multidirectional: bool = True, opacity: float = 1.0, blend_mode: int = 0) -> str:
    """QGIS hillshade renderer; ``zfactor`` converts elevation units to the CRS's horizontal units.

    ``blend_mode=MULTIPLY`` shades the layers below (hillshade over terrain colours)."""
    body = (
        f'    <rasterrenderer type="hillshade" band="{band}" opacity="{opacity:g}" alphaBand="-1" '
        f'zfactor="{zfactor:.9g}" azimuth="{azimuth:g}" angle="{altitude:g}" '
        f'multidirection="{int(multidirectional)}" nodataColor="">\n'
        "      <rasterTransparency/>\n    </rasterrenderer>\n"
    )
    return _HEAD + body + _TAIL.replace("<blendMode>0</blendMode>", f"<blendMode>{int(blend_mode)}</blendMode>")


def multiband_qml(ranges, bands=(1, 2, 3)) -> str:
    """RGB composite of ``bands`` stretched to the given ``[(min, max)] * 3`` ranges."""
    enh = ""
    for colour, (lo, hi) in zip(("red", "green", "blue"), ranges):
        enh += (f"      <{colour}ContrastEnhancement><minValue>{lo:.6g}</minValue><maxValue>{hi:.6g}</maxValue>"
                f"<algorithm>StretchToMinimumMaximum</algorithm></{colour}ContrastEnhancement>\n")
    body = (
        f'    <rasterrenderer type="multibandcolor" opacity="1" alphaBand="-1" redBand="{bands[0]}" '
        f'greenBand="{bands[1]}" blueBand="{bands[2]}" nodataColor="">\n'
        f"      <rasterTransparency/>\n{enh}    </rasterrenderer>\n"
    )
    return _HEAD + body + _TAIL


def style_for_target(target: dict, value_range=None, style: str = "auto", zfactor: float = 1.0,
                     blend_mode: int = 0) -> str:
    """The style of a continuous model output described by ``ModelMetadata.target``.

    Three or more bands → RGB of bands 1–3; elevation in metres → terrain
    colours (or ``style="hillshade"``); anything else → viridis. Ranges come
    from the training data (``target["value_range"]``) when known, so every
    tile a model generates is drawn on the same scale and tiles join without
    colour steps; else from ``value_range`` (this output's 2–98 %).
    ``kind`` (set by Train GAN from units, band names and file name) picks
    terrain colours for elevation.
    """
    ranges = target.get("value_range") or []
    n = int(target.get("bands", 1))
    if style == "rgb" or (style == "auto" and n >= 3):
        if len(ranges) >= 3:
            return multiband_qml(ranges[:3])
        lo, hi = value_range or (0.0, 1.0)
        return multiband_qml([(lo, hi)] * 3)
    if style == "hillshade":
        return hillshade_qml(zfactor=zfactor, blend_mode=blend_mode)
    lo, hi = ranges[0] if ranges else (value_range or (0.0, 1.0))
    # metres mean elevation only for a model that does not say what it outputs (a canopy height in m is a value)
    terrain = target.get("kind") == "elevation" or (not target.get("kind") and target.get("units") == "m")
    return pseudocolor_qml(lo, hi, TERRAIN if terrain else VIRIDIS)
