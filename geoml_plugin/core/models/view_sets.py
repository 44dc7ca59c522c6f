"""Which dihedral views a 1-, 2-, 4- or 8-view average uses (indices k of ``core.augment.dihedral``).

2 = the patch and its mirror image, 4 = the four quarter turns, 8 = all. Shared by
``core.predict`` (VIEWS), ``core.fewshot.job``, the Processing algorithms and
``MetaClassifier.views``, so "2 views" means one thing and is checked in one place.
Torch-free, so ``core.predict`` and the Processing provider can import it at load time.
"""
from ..errors import InputError

VIEW_SETS = {1: (0,), 2: (0, 4), 4: (0, 1, 2, 3), 8: tuple(range(8))}
VIEW_COUNTS = tuple(VIEW_SETS)  # the choices offered: 1, 2, 4, 8


def check_views(views: int) -> None:
    """Refuse a view count other than 1, 2, 4 or 8 with a clear message."""
    if views not in VIEW_SETS:
        raise InputError("Test-time views must be 1, 2, 4 or 8.")
