import sys

from femplast.cli import main

sys.exit(main())
