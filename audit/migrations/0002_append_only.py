"""Append-only triggers (PostgreSQL and SQLite) and PostgreSQL-only search indexes."""

from django.db import migrations

from audit import guard

# PostgreSQL: LIKE 'prefix%' on action uses this index whatever the database collation.
PG_INDEXES = [
    "CREATE INDEX IF NOT EXISTS audit_action_prefix_idx ON audit_auditevent (action varchar_pattern_ops, id)",
]
# Free-text search (audit/filters.py SEARCH_SQL) is backed by a trigram index when pg_trgm is available.
PG_TRGM = """
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm') THEN
        CREATE EXTENSION IF NOT EXISTS pg_trgm;
        CREATE INDEX IF NOT EXISTS audit_search_trgm_idx ON audit_auditevent
            USING gin ((upper(object_repr || ' ' || actor_name || ' ' || host_name || ' ' || data::text)) gin_trgm_ops);
    END IF;
END;
$$;
"""


def forwards(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor == "postgresql":
        for statement in PG_INDEXES + [PG_TRGM]:
            schema_editor.execute(statement)
    guard.install(connection)


def backwards(apps, schema_editor):
    connection = schema_editor.connection
    guard.uninstall(connection)
    if connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS audit_action_prefix_idx")
        schema_editor.execute("DROP INDEX IF EXISTS audit_search_trgm_idx")


class Migration(migrations.Migration):

    dependencies = [("audit", "0001_initial")]

    operations = [migrations.RunPython(forwards, backwards)]
