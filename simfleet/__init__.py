"""simfleet: simulated SR-IOV hypervisors over real SSH (asyncssh) for the demo, tests and benchmarks.

Never imports Django. See simfleet/README.md for the API, the CLI, the kernel rules and the faults.
"""

from .host import FAULTS, SimHost, SimSystem, iommu_rule
from .profiles import PROFILES, mixed_profiles
from .server import USERS, FleetHost, SimFleet

__all__ = [
    "FAULTS",
    "PROFILES",
    "USERS",
    "FleetHost",
    "SimFleet",
    "SimHost",
    "SimSystem",
    "iommu_rule",
    "mixed_profiles",
]
