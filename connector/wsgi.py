"""The intake as a WSGI application for Granian (the production shape on PostgreSQL):

    CONNECTOR_CONFIG=/etc/connector/config.yaml \\
        granian --interface wsgi --factory connector.wsgi:application --workers 2 \\
            --blocking-threads 8 --backpressure 64 --http 1 --no-ws

One Granian worker process per core, each running the app on ``--blocking-threads`` Python
threads; deliveries of one process that arrive together share one commit (group commit), so
threads waiting on the database keep the CPUs busy with the others. Each worker process
serves webhooks only; run the worker, dispatcher and scheduler roles with
`connector run --roles worker,dispatcher,scheduler` beside it. gunicorn runs it too
(``gunicorn -w 5 'connector.wsgi:application()'``), at about half the rate.
"""

from __future__ import annotations

import os

from flask import Flask

from connector.config import load_config
from connector.observability import setup_logging


def application(config_path: str | None = None) -> Flask:
    """Build the intake app from ``CONFIG_PATH`` (or ``$CONNECTOR_CONFIG``)."""
    from connector.runtime import Runtime

    path = config_path or os.environ.get("CONNECTOR_CONFIG")
    if not path:
        raise RuntimeError("set CONNECTOR_CONFIG to the connector's config file")
    config = load_config(path)
    setup_logging(config.logging["level"], config.logging["format"])
    return Runtime(config).app
