/*
 * migrate — DESIGN: the runner reads what the database has recorded once, then applies each
 * missing migration in a transaction of its own. Every transaction starts by taking the same
 * advisory lock, so two nodes starting together serialize here: the second one waits, then
 * sees the version recorded by the first (it checks again under the lock) and skips it.
 *
 * Even the first step, creating schema_migrations if it is missing, runs under the lock:
 * two concurrent CREATE TABLE IF NOT EXISTS can both pass the "not exists" check and one then
 * fails on a duplicate catalog entry.
 *
 * Runs on the db keeper thread (a worker-role thread, see db.c) through its struct dw_store.
 */
#define DW_LOG_MODULE "migrate"
#include "dealwire/migrate.h"
#include "dealwire/log.h"
#include "dealwire/mem.h"
#include "dealwire/time.h"
#include "dealwire/store.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOCK_SQL "SELECT pg_advisory_xact_lock(" DW_MIGRATE_LOCK_KEY ")"

/* ------------------------------------------------------------------------------------------
 * Planning (pure)
 * ------------------------------------------------------------------------------------------ */

int dw_migrate_parse_file_name(const char *file, int *version, char *name, size_t size)
{
    const char *p = file, *start;
    long v = 0;
    size_t len;
    int digits = 0;

    if (!file || !version || !name || size == 0)
        return -EINVAL;
    for (; *p >= '0' && *p <= '9'; p++, digits++) {
        if (digits == 9)
            return -EINVAL;
        v = v * 10 + (*p - '0');
    }
    if (digits == 0 || v == 0 || *p++ != '_')
        return -EINVAL;
    start = p;
    while ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_')
        p++;
    len = (size_t)(p - start);
    if (len == 0 || strcmp(p, ".sql") != 0 || len >= size || len >= DW_MIGRATION_NAME_MAX)
        return -EINVAL;
    memcpy(name, start, len);
    name[len] = '\0';
    *version = (int)v;
    return 0;
}

static int by_version(const void *a, const void *b)
{
    const struct dw_migration *x = a, *y = b;

    return (x->version > y->version) - (x->version < y->version);
}

int dw_migrate_plan(const struct dw_migration_file *files, size_t nfiles, struct dw_migration **out,
                    size_t *n)
{
    struct dw_migration *list = NULL;

    if ((!files && nfiles > 0) || !out || !n)
        return -EINVAL;
    if (nfiles > 0)
        list = dw_xcalloc(nfiles, sizeof(*list));
    for (size_t i = 0; i < nfiles; i++) {
        const struct dw_migration_file *f = &files[i];
        struct dw_migration *m = &list[i];

        if (dw_migrate_parse_file_name(f->file, &m->version, m->name, sizeof(m->name)) < 0) {
            dw_log(DW_LOG_ERROR, "migration file \"%s\": expected a name like 001_deals.sql",
                   f->file ? f->file : "(null)");
            goto fail_inval;
        }
        if (!f->sql || f->len == 0) {
            dw_log(DW_LOG_ERROR, "migration file %s is empty", f->file);
            goto fail_inval;
        }
        m->sql = f->sql;
    }
    if (nfiles > 0)
        qsort(list, nfiles, sizeof(*list), by_version);
    for (size_t i = 1; i < nfiles; i++) {
        if (list[i].version == list[i - 1].version) {
            dw_log(DW_LOG_ERROR, "migrations %s and %s share version %d", list[i - 1].name,
                   list[i].name, list[i].version);
            free(list);
            return -EEXIST;
        }
    }
    *out = list;
    *n = nfiles;
    return 0;

fail_inval:
    free(list);
    return -EINVAL;
}

/* ------------------------------------------------------------------------------------------
 * Applying
 * ------------------------------------------------------------------------------------------ */

struct run {
    const struct dw_migration *list;
    size_t n;
    bool *recorded; /* recorded[i]: list[i] is in schema_migrations */
    int version;    /* highest version recorded */
    const struct dw_migration *current;
    bool applied; /* the current migration was applied (not found recorded) */
    bool logged;  /* its failure was logged already */
};

/* The 1-based line of the 1-based character position pos in text (UTF-8). */
static int line_of(const char *text, int pos)
{
    int line = 1, chars = 0;

    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        if ((*p & 0xC0) == 0x80)
            continue; /* a continuation byte is not a character of its own */
        if (++chars >= pos)
            break;
        line += *p == '\n';
    }
    return line;
}

/* Transaction 1: make sure schema_migrations exists and read what it holds. */
static int read_recorded(struct dw_store *st, void *arg)
{
    struct run *run = arg;
    PGresult *res;
    int r;

    r = dw_store_run(st, LOCK_SQL, 0, NULL);
    if (r == 0)
        r = dw_store_run(st,
                         "CREATE TABLE IF NOT EXISTS schema_migrations ("
                         " version integer PRIMARY KEY,"
                         " name text NOT NULL,"
                         " applied_at timestamptz NOT NULL DEFAULT now())",
                         0, NULL);
    if (r == 0)
        r = dw_store_exec(st, &res, "SELECT version, name FROM schema_migrations ORDER BY version",
                          0, NULL);
    if (r != 0) /* 0 or a negative errno: res is set only on 0 */
        return r;

    for (int row = 0; row < PQntuples(res); row++) {
        const char *name = PQgetvalue(res, row, 1);
        bool known = false;
        long long v;
        int version;

        if (dw_store_parse_int(PQgetvalue(res, row, 0), 0, INT_MAX, &v) < 0) {
            PQclear(res);
            return -EPROTO; /* an int4 column: cannot happen */
        }
        version = (int)v;

        run->version = version > run->version ? version : run->version;
        for (size_t i = 0; i < run->n; i++) {
            if (run->list[i].version != version)
                continue;
            known = true;
            run->recorded[i] = true;
            if (strcmp(run->list[i].name, name) != 0)
                dw_log(DW_LOG_WARN,
                       "migration %d is recorded as \"%s\" but this build calls it "
                       "\"%s\"; keeping what the database has",
                       version, name, run->list[i].name);
        }
        if (!known)
            dw_log(DW_LOG_WARN,
                   "the database has migration %d (%s), which this build does not "
                   "know: a newer dealwire has run here",
                   version, name);
    }
    PQclear(res);
    return 0;
}

/* Transaction 2..n: apply run->current unless another node did so meanwhile. */
static int apply_one(struct dw_store *st, void *arg)
{
    struct run *run = arg;
    const struct dw_migration *m = run->current;
    char version[16];
    const char *params[2] = {version, m->name};
    PGresult *res;
    bool present;
    int r;

    snprintf(version, sizeof(version), "%d", m->version);
    run->applied = false;
    run->logged = false;
    r = dw_store_run(st, LOCK_SQL, 0, NULL);
    if (r == 0)
        r = dw_store_exec(st, &res, "SELECT 1 FROM schema_migrations WHERE version = $1::integer",
                          1, params);
    if (r != 0)
        return r;
    present = PQntuples(res) > 0;
    PQclear(res);
    if (present)
        return 0;

    r = dw_store_exec_script(st, m->sql);
    if (r == -EIO) {
        int pos = dw_store_error_position(st);

        run->logged = true;
        if (pos > 0)
            dw_log(DW_LOG_ERROR, "migration %03d_%s failed at line %d: %s", m->version, m->name,
                   line_of(m->sql, pos), dw_store_error(st));
        else
            dw_log(DW_LOG_ERROR, "migration %03d_%s failed: %s", m->version, m->name,
                   dw_store_error(st));
    }
    if (r < 0)
        return r;
    r = dw_store_run(st, "INSERT INTO schema_migrations (version, name) VALUES ($1::integer, $2)",
                     2, params);
    if (r < 0)
        return r;
    run->applied = true;
    return 0;
}

int dw_migrate_apply_list(struct dw_store *st, const struct dw_migration *list, size_t n,
                          int *version)
{
    struct run run = {.list = list, .n = n};
    size_t applied = 0;
    int r;

    if (!st || (!list && n > 0) || !version)
        return -EINVAL;
    run.recorded = dw_xcalloc(n ? n : 1, sizeof(*run.recorded));

    r = dw_store_tx(st, read_recorded, &run);
    if (r == -EIO)
        dw_log(DW_LOG_ERROR, "cannot read schema_migrations: %s", dw_store_error(st));
    if (r < 0)
        goto out;

    for (size_t i = 0; i < n; i++) {
        int64_t t0 = dw_now_mono_ns();

        if (run.recorded[i])
            continue;
        run.current = &list[i];
        r = dw_store_tx(st, apply_one, &run);
        if (r == -EIO && !run.logged)
            dw_log(DW_LOG_ERROR, "migration %03d_%s failed%s: %s", list[i].version, list[i].name,
                   run.applied ? " at commit" : "", dw_store_error(st));
        if (r < 0)
            goto out;
        run.version = list[i].version > run.version ? list[i].version : run.version;
        if (run.applied) {
            applied++;
            dw_log(DW_LOG_INFO, "applied migration %03d_%s in %lld ms", list[i].version,
                   list[i].name, (long long)((dw_now_mono_ns() - t0) / DW_NSEC_PER_MSEC));
        }
    }
    *version = run.version;
    if (applied > 0)
        dw_log(DW_LOG_INFO, "schema at version %d: %zu migration%s applied", run.version, applied,
               applied == 1 ? "" : "s");
    else
        dw_log(DW_LOG_INFO, "schema up to date at version %d", run.version);
    r = (int)applied;

out:
    free(run.recorded);
    return r;
}

int dw_migrate_apply(struct dw_store *st, int *version)
{
    struct dw_migration *list;
    size_t n;
    int r;

    r = dw_migrate_plan(dw_migration_files, dw_migration_file_count, &list, &n);
    if (r < 0)
        return -EINVAL;
    r = dw_migrate_apply_list(st, list, n, version);
    free(list);
    return r;
}
