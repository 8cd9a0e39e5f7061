"""Simulators of the CRMs' APIs: Bitrix24 (``simulators.bitrix24``), Pipedrive
(``simulators.pipedrive``) and 1C's standard OData interface (``simulators.onec``).

They stand for the real services in the tests, the benchmarks and ``connector demo``, so they
import nothing of the connector: like a real CRM, they know only their own documented API.
Each one serves its API on one request pipeline (``simulators.base``) and shares the fault
knobs, the loopback server and the webhook sender kept here.
"""

from simulators.faults import FaultKnobs
from simulators.leaky_bucket import LeakyBucket
from simulators.server import SimulatorServer
from simulators.webhooks import Delivery, WebhookSender

__all__ = ["Delivery", "FaultKnobs", "LeakyBucket", "SimulatorServer", "WebhookSender"]
