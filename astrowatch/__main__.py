import sys

from astrowatch.cli import main

sys.exit(main())
