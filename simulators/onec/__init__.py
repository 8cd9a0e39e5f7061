"""A simulator of 1C:Enterprise's standard OData interface: the service (``simulator``) and the
``$filter`` interpreter it answers queries with (``odata_filter``)."""

from simulators.onec.simulator import OneCSimulator, main, seed_demo

__all__ = ["OneCSimulator", "main", "seed_demo"]
