"""Runtime tests share model builders in op_models.py; pytest's importlib mode does not put
this folder on sys.path, so add it here."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
