"""`python -m runtime.tvm compile|run` (see `runtime.tvm.cli`)."""

import sys

from runtime.tvm.cli import main

sys.exit(main())
