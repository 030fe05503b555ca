"""pysqlbridge with SQL Server's rule for snapshot isolation, for tests/mssql.rs.

SQL Server runs each statement at the isolation level the session last set
with SET TRANSACTION ISOLATION LEVEL. At SNAPSHOT, a statement that reads a
database whose ALLOW_SNAPSHOT_ISOLATION is OFF fails with error 3952 (the SET
itself succeeds: the failure comes with the first read). pysqlbridge accepts
the SET and ignores it, and its sys.databases says snapshot isolation is OFF.

This launcher keeps each connection's level as SQL Server would (from the SET
statements in its batches), appends one line per batch that reads something
to isolation.log in the working directory, "<LEVEL>\t<the batch, flattened>",
and answers a read at SNAPSHOT with SQL Server's error 3952 unless the
environment says ISOLATION_PEER_SNAPSHOT=on. With it on, sys.databases says
so (snapshot_isolation_state 1, ON), and reads run. Nothing models row
versions: what the level changes about the rows a read sees is SQL Server's
and untested here. Everything else is pysqlbridge's own.

Usage: python isolation_peer.py -- <pysqlbridge args...>
"""

from __future__ import annotations

import os
import re
import sys

LEVEL = re.compile(
    r"\bSET\s+TRANSACTION\s+ISOLATION\s+LEVEL\s+"
    r"(READ\s+UNCOMMITTED|READ\s+COMMITTED|REPEATABLE\s+READ|SNAPSHOT|SERIALIZABLE)\b",
    re.IGNORECASE,
)
READS = re.compile(r"\bFROM\b", re.IGNORECASE)


def main() -> None:
    args = sys.argv[1:]
    if not args or args[0] != "--":
        sys.exit("usage: isolation_peer.py -- <pysqlbridge args...>")
    allowed = os.environ.get("ISOLATION_PEER_SNAPSHOT", "off") == "on"

    from pysqlbridge import information_schema
    from pysqlbridge.catalog import Catalog
    from pysqlbridge.server import main as serve
    from pysqlbridge.tds.result import QueryError

    if allowed:
        columns = information_schema.DATABASE_COLUMNS
        for i, (name, kind, _) in enumerate(columns):
            if name == "snapshot_isolation_state":
                columns[i] = (name, kind, 1)
            elif name == "snapshot_isolation_state_desc":
                columns[i] = (name, kind, "ON")

    answer = Catalog.answer

    def answer_at_level(self, request, *rest, **named):
        session = getattr(request, "session", None)
        if named.get("depth", 0) or session is None:
            return answer(self, request, *rest, **named)
        text = " ".join(
            [request.sql or ""] + [a for a in request.arguments if isinstance(a, str)]
        )
        for found in LEVEL.finditer(text):
            session["isolation"] = " ".join(found.group(1).upper().split())
        if READS.search(text):
            level = session.get("isolation", "READ COMMITTED")
            with open("isolation.log", "a", encoding="utf-8") as log:
                log.write(f"{level}\t{' '.join(text.split())}\n")
            if level == "SNAPSHOT" and not allowed:
                raise QueryError(
                    "Snapshot isolation transaction failed accessing database "
                    "'pysqlbridge' because snapshot isolation is not allowed in this "
                    "database. Use ALTER DATABASE to allow snapshot isolation.",
                    number=3952,
                )
        return answer(self, request, *rest, **named)

    Catalog.answer = answer_at_level
    sys.argv = ["pysqlbridge", *args[1:]]
    serve()


if __name__ == "__main__":
    main()
