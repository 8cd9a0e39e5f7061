"""The intake as a WSGI application for gunicorn (the production shape on PostgreSQL):

    CONNECTOR_CONFIG=/etc/connector/config.yaml \\
        gunicorn -w 5 -b 0.0.0.0:8080 'connector.wsgi:application()'

``-w``: 2 × cores + 1 sync workers (5 on 2 cores): a sync worker handles one delivery at a
time and mostly waits for the database's commit and the sender's close, so more workers than
cores keep the CPUs busy (bench/intake.py measures it). Each gunicorn worker process serves
webhooks only; run the worker, dispatcher and scheduler roles with
`connector run --roles worker,dispatcher,scheduler` beside it.
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
