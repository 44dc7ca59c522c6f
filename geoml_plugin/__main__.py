"""``python -m geoml_plugin …`` runs the ``geoml`` command line (``cli/``)."""
import sys

from geoml_plugin.cli import main

if __name__ == "__main__":
    sys.exit(main())
