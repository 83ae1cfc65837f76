"""alembic environment for Switchboard.

There is no ``alembic.ini``: :mod:`appservice.db.migrate` builds the ``Config`` in code, opens an
async SQLAlchemy engine and calls alembic inside ``AsyncConnection.run_sync``, handing the
synchronous connection over in ``config.attributes["connection"]`` together with the schema that
should hold alembic's version table (``config.attributes["version_table_schema"]``).

Offline mode (``--sql``) works when a ``sqlalchemy.url`` main option is set on the Config.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

config = context.config

# Switchboard writes its SQL by hand (appservice/db/store.py); there is no ORM metadata to
# autogenerate from, so every revision is written explicitly.
target_metadata = None


def run_migrations_offline() -> None:
    """Emit the migration SQL for the URL in the ``sqlalchemy.url`` option."""
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("offline migrations need the sqlalchemy.url main option")
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        version_table_schema=config.attributes.get("version_table_schema"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on the connection that appservice.db.migrate passes in."""
    connection: Connection | None = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "Switchboard's migrations run through appservice.db.migrate "
            "(upgrade(url) / downgrade(url, revision)), which passes the connection in"
        )
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table_schema=config.attributes.get("version_table_schema"),
        # SQLite cannot ALTER most things in place; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
