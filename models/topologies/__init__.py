"""The built-in topologies, one module each; importing this package registers them in the
order of `BUILTIN`, which is the order of `models.list_topologies()`.

A new topology is one more module (here, or anywhere that is imported before use): its
options dataclass, its gate, and a `register_topology(TopologySpec(...))` call
(`models.topology`).
"""

import importlib

#: the built-in topology modules, in registry order
BUILTIN = ("dense", "hard", "soft", "cluster")

for _name in BUILTIN:
    importlib.import_module(f"models.topologies.{_name}")
