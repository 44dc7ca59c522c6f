"""Which dihedral views a 1-, 2-, 4- or 8-view average uses (indices k of ``meta.dihedral``).

2 = the patch and its mirror image, 4 = the four quarter turns, 8 = all. Shared by
``core.predict`` (VIEWS) and ``MetaClassifier.views``, so "2 views" means one thing.
Torch-free, so ``core.predict`` can import it at load time.
"""
VIEW_SETS = {1: (0,), 2: (0, 4), 4: (0, 1, 2, 3), 8: tuple(range(8))}
