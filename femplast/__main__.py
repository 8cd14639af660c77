import sys

from femplast.app.cli import main

sys.exit(main())
