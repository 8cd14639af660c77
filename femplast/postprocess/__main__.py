import sys

from femplast.postprocess.plot import main

sys.exit(main())
