"""`python -m eval run ...` | `python -m eval sweep ...`: see `python -m eval {run,sweep} --help`."""

import sys

from eval.cli import main

if __name__ == "__main__":
    sys.exit(main())
