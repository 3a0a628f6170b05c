"""The state database's backends: SQLite (embedded, the default) and PostgreSQL (shared by members).

The stores (L{jumpoint.state}, L{jumpoint.item_store}, ...) write their SQL
once, in the common subset of both dialects with C{?} placeholders, against
L{jumpoint.store.connection.Connection}: a C{sqlite3.Connection} is one as it
is; L{jumpoint.store.postgres.PostgresConnection} translates for psycopg.
"""
