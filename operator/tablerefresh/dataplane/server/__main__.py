"""``python -m tablerefresh.dataplane.server``: the served engine's own process (see ``engine``)."""

import sys

from tablerefresh.dataplane.server.engine import main

sys.exit(main())
