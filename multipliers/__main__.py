import sys

from multipliers.cli import main

sys.exit(main())
