/*
 * migrate — the database schema as numbered SQL files, sql/NNN_name.sql, compiled into the
 * binary at build time (cmake/embed_sql.cmake), and the runner that applies the ones a
 * database lacks.
 *
 * Each pending migration runs in a transaction of its own, under a transaction-level advisory
 * lock (pg_advisory_xact_lock(DW_MIGRATE_LOCK_KEY)), and is recorded in
 * schema_migrations(version, name, applied_at) in that same transaction. So a migration is
 * applied whole or not at all, exactly once, even when several nodes start at the same moment
 * against one database; running again is a no-op.
 */
#ifndef DEALWIRE_MIGRATE_H
#define DEALWIRE_MIGRATE_H

#include <stddef.h>

struct dw_store;

/* The advisory lock every node takes around schema changes ("dwmigrat" in ASCII). */
#define DW_MIGRATE_LOCK_KEY "7239375225495904628"

/* The longest migration name kept ("deals" of 001_deals.sql), terminating NUL included. */
#define DW_MIGRATION_NAME_MAX 64

/* One file of sql/, as embedded: its file name and its text (NUL-terminated, len bytes). */
struct dw_migration_file {
    const char *file;
    const char *sql;
    size_t len;
};

/* The files of sql/ in the build (generated; sorted by name). */
extern const struct dw_migration_file dw_migration_files[];
extern const size_t dw_migration_file_count;

/* One migration, ready to apply. */
struct dw_migration {
    int version;                      /* NNN of the file name, > 0 */
    char name[DW_MIGRATION_NAME_MAX]; /* the rest, without ".sql" */
    const char *sql;                  /* borrowed from the dw_migration_file */
};

/* thread: any. Parses a migration file name: "NNN_name.sql", NNN one to nine digits with a
 * value above 0, name lower-case letters, digits and '_' (shorter than
 * DW_MIGRATION_NAME_MAX). Stores the number in *version and name in name (size bytes).
 * Returns 0, or -EINVAL with the outputs untouched. */
int dw_migrate_parse_file_name(const char *file, int *version, char *name, size_t size);

/* thread: any. Turns nfiles files into migrations in the order they must run (by version).
 * Returns 0 with *out (a new array the caller frees with free(); NULL when nfiles is 0) and
 * *n, or after one error line in the log -EINVAL (a file name that does not parse, or a
 * file with no text) or -EEXIST (two files with one version). */
int dw_migrate_plan(const struct dw_migration_file *files, size_t nfiles, struct dw_migration **out,
                    size_t *n);

/* thread: worker (st's owner); blocks on the database. Applies the migrations of list (n, in
 * order) that the database has not recorded, logging each one. On success returns how many it
 * applied and stores in *version the database's schema version (the highest recorded).
 * Otherwise: -EAGAIN when the database is unavailable (try again later: nothing half-done
 * stays behind), -EIO after one error line naming the migration when the server refused it
 * (fatal: the schema cannot be brought up to date). */
int dw_migrate_apply_list(struct dw_store *st, const struct dw_migration *list, size_t n,
                          int *version);

/* thread: worker (st's owner). dw_migrate_apply_list() with the embedded migrations
 * (dw_migration_files); -EINVAL after a log line when those do not plan. */
int dw_migrate_apply(struct dw_store *st, int *version);

#endif
