"""The intake as a WSGI application for gunicorn (the production shape on PostgreSQL):

    CONNECTOR_CONFIG=/etc/connector/config.yaml \\
        gunicorn -w 4 -b 0.0.0.0:8080 'connector.wsgi:application()'

Each gunicorn worker process serves webhooks only; run the worker, dispatcher and
scheduler roles with `connector run --roles worker,dispatcher,scheduler` beside it.
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
