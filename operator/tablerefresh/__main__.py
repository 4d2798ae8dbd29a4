import sys

from tablerefresh.cli import main

sys.exit(main())
