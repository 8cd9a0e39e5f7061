"""``python -m simulators.onec``: serve a simulated 1C OData interface until interrupted."""

from simulators.onec.simulator import main

main()
