"""Alembic environment: runs on the connection the connector hands over."""

from __future__ import annotations

from alembic import context

from connector.storage.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # run from the alembic CLI: build an engine from the ini's URL
    from connector.storage.engine import make_engine

    engine = make_engine(config.get_main_option("sqlalchemy.url") or "sqlite:///connector.db")
    connection = engine.connect()

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
