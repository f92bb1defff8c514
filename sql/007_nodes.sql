-- 007_nodes: the daemons that share this database (src/leader.c, docs/operations.md).
--
-- Each daemon records itself here every second: which node it is, whether it leads the
-- monitors (the PostgreSQL advisory lock it holds says so; this row only reports it), and
-- whether it shares its messages with the others over Redis. A node that sees another one
-- heard from in the last seconds, without Redis on both, says loudly that their clients do not
-- get each other's live messages.
CREATE TABLE dealwire_nodes (
    node       text PRIMARY KEY,          -- "host:port"
    started_at timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL,
    leader     boolean NOT NULL,
    redis      boolean NOT NULL
);
