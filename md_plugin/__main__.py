"""``python -m md_plugin`` runs the ``equitriton-md`` command line."""

import sys

from md_plugin.cli import main

sys.exit(main())
