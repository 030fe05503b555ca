"""pysqlbridge with SQL Server's sp_set_session_context, for tests/mssql.rs.

SQL Server keeps a session context, key-value pairs a client sets with
EXEC sp_set_session_context and a query (a row-level security predicate, say)
reads with SESSION_CONTEXT(). pysqlbridge has neither: it answers an EXEC of
a procedure it does not know with error 2812. This launcher adds the
procedure to pysqlbridge's own table of catalog procedures, so that an EXEC of
it inside a batch, or inside sp_executesql's statement, runs where SQL Server
would run it, and answers as SQL Server does: with no result set, only its
DONE. Each call is appended to session_context.log in the working directory
as one line, "<key>=<value>" ("NULL" for a NULL value), in the order the
peer ran them. Everything else is pysqlbridge's own.

Usage: python context_peer.py -- <pysqlbridge args...>
"""

from __future__ import annotations

import sys


def main() -> None:
    args = sys.argv[1:]
    if not args or args[0] != "--":
        sys.exit("usage: context_peer.py -- <pysqlbridge args...>")

    from pysqlbridge import procedures
    from pysqlbridge.server import main as serve
    from pysqlbridge.tds.result import QueryResult

    def set_session_context(catalog, given: dict) -> QueryResult:
        key, value = given.get("key"), given.get("value")
        with open("session_context.log", "a", encoding="utf-8") as log:
            log.write(f"{key}={'NULL' if value is None else value}\n")
        # No columns: no result set, a bare DONE, as SQL Server answers.
        return QueryResult(columns=[], rows=[])

    # SQL Server's own parameter names, in its order (@key, @value, @read_only).
    procedures.SIGNATURES["sp_set_session_context"] = ("key", "value", "read_only")
    procedures.PROCEDURES["sp_set_session_context"] = set_session_context
    sys.argv = ["pysqlbridge", *args[1:]]
    serve()


if __name__ == "__main__":
    main()
