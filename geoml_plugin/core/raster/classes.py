"""Class lists: values, names and colours shared by models, rasters and styles."""
from __future__ import annotations

from dataclasses import asdict, dataclass

# Distinct, colour-blind-aware defaults (Tableau 10, then Set3-like extras).
PALETTE = [
    "#1f77b4", "#2ca02c", "#ff7f0e", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#98df8a", "#ffbb78", "#ff9896", "#c5b0d5", "#c49c94",
]


@dataclass
class ClassInfo:
    value: int  # value in the class raster (1..K; 0 is nodata)
    name: str
    color: str  # '#rrggbb'

    def rgba(self) -> tuple[int, int, int, int]:
        c = self.color.lstrip("#")
        return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16), 255

    def to_dict(self) -> dict:
        return asdict(self)


def default_color(index: int) -> str:
    if index < len(PALETTE):
        return PALETTE[index]
    # golden-angle hues beyond the palette
    import colorsys

    r, g, b = colorsys.hsv_to_rgb((index * 0.618033988749895) % 1.0, 0.65, 0.9)
    return "#{:02x}{:02x}{:02x}".format(int(r * 255), int(g * 255), int(b * 255))


def make_classes(names) -> list[ClassInfo]:
    return [ClassInfo(i + 1, str(n), default_color(i)) for i, n in enumerate(names)]


def classes_from_dicts(items) -> list[ClassInfo]:
    return [ClassInfo(int(d["value"]), str(d["name"]), str(d.get("color") or default_color(i))) for i, d in enumerate(items)]


def category_names(classes: list[ClassInfo]) -> list[str]:
    """GDAL category list: index = raster value, 0 = nodata."""
    top = max((c.value for c in classes), default=0)
    names = [""] * (top + 1)
    for c in classes:
        names[c.value] = c.name
    return names


def color_table(classes: list[ClassInfo]) -> dict:
    table = {0: (0, 0, 0, 0)}
    for c in classes:
        table[c.value] = c.rgba()
    return table



# Conventional land-cover colours (shades for several classes of a kind), matched on
# words in a class name; the first group that matches wins.
NAMED_COLORS = [
    (("water", "river", "lake", "sea", "ocean", "wetland"), ("#1f78b4", "#6baed6", "#08519c")),
    (("forest", "tree", "wood"), ("#1b7837", "#4d9221", "#00441b")),
    (("grass", "pasture", "meadow", "herbaceous", "shrub"), ("#a6d96a", "#d9ef8b", "#66bd63")),
    (("crop", "agri", "field", "farm"), ("#fdae61", "#fee08b", "#f46d43")),
    (("urban", "built", "residential", "building", "city", "settlement", "village", "town"),
     ("#d7191c", "#f4a582", "#b2182b")),
    (("industrial", "commercial"), ("#984ea3", "#c2a5cf")),
    (("road", "highway", "street"), ("#636363", "#969696")),
    (("bare", "sand", "soil", "rock"), ("#bf9b6f", "#dfc27d")),
    (("snow", "ice", "cloud"), ("#e0f3f8", "#f7f7f7")),
]


# The few-shot panel's low-confidence overlay: a colour no class gets (not the oranges and reds of crops and
# built-up land), so it cannot be mistaken for a class.
LOW_CONFIDENCE_COLOR = "#ff00ff"


def _rgb(color: str) -> tuple:
    c = color.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def _close(a: str, b: str, limit: float = 60.0) -> bool:
    return sum((x - y) ** 2 for x, y in zip(_rgb(a), _rgb(b))) ** 0.5 < limit


def make_styled_classes(names, colors=None) -> list[ClassInfo]:
    """Classes 1..K coloured by: the given colours; else a conventional shade for
    names such as 'Water' or 'Forest'; else palette colours unlike those taken."""
    names = [str(n) for n in names]
    chosen = list(colors or [None] * len(names))
    for i, n in enumerate(names):
        if chosen[i]:
            continue
        low = n.lower()
        shades = next((sh for words, sh in NAMED_COLORS if any(w in low for w in words)), ())
        chosen[i] = next((c for c in shades if not any(t and _close(c, t, 1) for t in chosen)), None)
    palette = (default_color(i) for i in range(10_000))
    for i in range(len(names)):
        if chosen[i] is None:
            chosen[i] = next(p for p in palette if not any(t and _close(p, t) for t in chosen)
                             and not _close(p, LOW_CONFIDENCE_COLOR, 100))
    return [ClassInfo(i + 1, n, c) for i, (n, c) in enumerate(zip(names, chosen))]
