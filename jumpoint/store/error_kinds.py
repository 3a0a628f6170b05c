"""What a database error means for the caller: retry it, fail fast, or report it.

SQLite's "database is locked" is L{busy}: another process holds the write
lock for a moment, so the same statement is retried.  A lost or refused
PostgreSQL connection (server stopped, network down, admin shutdown) is
L{unavailable}: nothing will work until the database is back, so callers
fail fast (new sessions refused) and the database thread reconnects in the
background.  L{classify} gives one of the three answers for any error.
"""

from __future__ import annotations

import sqlite3

import psycopg

from shared.errors import StateUnavailable

BUSY = "busy"
UNAVAILABLE = "unavailable"
OTHER = "other"


class DatabaseUnavailable(StateUnavailable):
    """The shared database cannot be reached now (its connection is being re-made).

    Shown to a console as C{state_unavailable} (status 10), as the audit
    log's refusals while the database is away.
    """


# SQLSTATE classes/codes of a server going away or refusing connections
_UNAVAILABLE_STATES = ("08", "57P01", "57P02", "57P03", "53300")


def is_busy(error: BaseException) -> bool:
    """Whether C{error} is SQLite's "database is locked/busy" (worth retrying as is)."""
    if not isinstance(error, sqlite3.OperationalError):
        return False
    text = str(error).lower()
    return "locked" in text or "busy" in text


def is_unavailable(error: BaseException) -> bool:
    """Whether C{error} says the PostgreSQL server cannot be reached (fail fast)."""
    if isinstance(error, DatabaseUnavailable):
        return True
    if isinstance(error, psycopg.OperationalError | psycopg.InterfaceError):
        state = getattr(error, "sqlstate", None)
        return state is None or state.startswith(_UNAVAILABLE_STATES)
    return False


def is_database_error(error: BaseException) -> bool:
    """Whether C{error} came from either backend's driver (not from the Jumpoint's code)."""
    return isinstance(error, sqlite3.Error | psycopg.Error | DatabaseUnavailable)


def classify(error: BaseException) -> str:
    """L{BUSY}, L{UNAVAILABLE} or L{OTHER}."""
    if is_busy(error):
        return BUSY
    if is_unavailable(error):
        return UNAVAILABLE
    return OTHER
