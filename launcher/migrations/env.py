"""Alembic environment for the whole SQL schema.

Each component keeps its own branch of revisions (``accounts`` in api/, ``messages`` in
persister/, ``deliveries`` in notifier/); ``launcher.migrate`` runs them all, and a
component's tests run its own (``tests/support/schema.py``).
"""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
