"""``python -m stream_app`` is the ``kpi`` command."""

import sys

from stream_app.cli import main

sys.exit(main())
