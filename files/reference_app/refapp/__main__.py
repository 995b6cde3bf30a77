"""`python -m refapp ...` is the same as the `refapp` console script."""

import sys

from refapp.cli import main

if __name__ == "__main__":
    sys.exit(main())
