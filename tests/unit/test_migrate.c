/*
 * test_migrate — the pure half of the migration runner: file names ("NNN_name.sql"), the
 * order migrations run in, refusing duplicate versions and empty files, error positions
 * turned into line numbers, and the migrations embedded in this build (they plan, number
 * 1..n without gaps, and leave transaction control to the runner).
 *
 * Applying them to a real PostgreSQL is tested in tests/integration/test_db.py.
 */
#include "../../src/migrate.c"

#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <strings.h>

#include <cmocka.h>

#include "test_util.h"

static void test_parse_good_names(void **state)
{
    static const struct {
        const char *file;
        int version;
        const char *name;
    } cases[] = {
        {"001_deals.sql", 1, "deals"},
        {"1_a.sql", 1, "a"},
        {"042_alert_inbox.sql", 42, "alert_inbox"},
        {"0010_v2_schema_2.sql", 10, "v2_schema_2"},
        {"999999999_x.sql", 999999999, "x"},
    };
    char name[DW_MIGRATION_NAME_MAX];
    int version;

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (dw_migrate_parse_file_name(cases[i].file, &version, name, sizeof(name)) != 0)
            fail_msg("%s should parse", cases[i].file);
        assert_int_equal(version, cases[i].version);
        assert_string_equal(name, cases[i].name);
    }
}

static void test_parse_bad_names(void **state)
{
    static const char *const bad[] = {
        "deals.sql",         /* no number */
        "_deals.sql",        /* no number */
        "000_zero.sql",      /* version 0 */
        "1000000000_x.sql",  /* ten digits */
        "001deals.sql",      /* no '_' */
        "001_.sql",          /* no name */
        "001_Deals.sql",     /* upper case */
        "001_de-als.sql",    /* '-' */
        "001_deals.SQL",     /* extension */
        "001_deals.sql.bak", /* trailing */
        "001_deals",         /* no extension */
        "001_deals sql.sql", /* space */
        "",
    };
    char name[DW_MIGRATION_NAME_MAX] = "keep";
    int version = -7;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (dw_migrate_parse_file_name(bad[i], &version, name, sizeof(name)) != -EINVAL)
            fail_msg("\"%s\" should not parse", bad[i]);
        assert_int_equal(version, -7); /* outputs untouched */
        assert_string_equal(name, "keep");
    }

    /* A name that does not fit the caller's buffer, or DW_MIGRATION_NAME_MAX. */
    char small[4];
    char longname[DW_MIGRATION_NAME_MAX + 16] = "1_";
    memset(longname + 2, 'a', DW_MIGRATION_NAME_MAX);
    snprintf(longname + 2 + DW_MIGRATION_NAME_MAX, sizeof(longname) - 2 - DW_MIGRATION_NAME_MAX,
             ".sql");
    assert_int_equal(dw_migrate_parse_file_name("1_abcd.sql", &version, small, sizeof(small)),
                     -EINVAL);
    assert_int_equal(dw_migrate_parse_file_name("1_abc.sql", &version, small, sizeof(small)), 0);
    assert_int_equal(dw_migrate_parse_file_name(longname, &version, name, sizeof(name)), -EINVAL);
    assert_int_equal(dw_migrate_parse_file_name(NULL, &version, name, sizeof(name)), -EINVAL);
    assert_int_equal(dw_migrate_parse_file_name("1_a.sql", NULL, name, sizeof(name)), -EINVAL);
}

/* Numeric order, not file-name order: 10 comes after 9 even as "10_" against "9_". */
static void test_plan_orders_by_version(void **state)
{
    const struct dw_migration_file files[] = {
        {"10_ten.sql", "SELECT 10", 9},
        {"002_two.sql", "SELECT 2", 8},
        {"9_nine.sql", "SELECT 9", 8},
        {"001_one.sql", "SELECT 1", 8},
    };
    struct dw_migration *list;
    size_t n;

    (void)state;
    assert_int_equal(dw_migrate_plan(files, 4, &list, &n), 0);
    assert_int_equal(n, 4);
    assert_int_equal(list[0].version, 1);
    assert_string_equal(list[0].name, "one");
    assert_string_equal(list[0].sql, "SELECT 1");
    assert_int_equal(list[1].version, 2);
    assert_int_equal(list[2].version, 9);
    assert_int_equal(list[3].version, 10);
    assert_string_equal(list[3].name, "ten");
    free(list);

    assert_int_equal(dw_migrate_plan(NULL, 0, &list, &n), 0);
    assert_null(list);
    assert_int_equal(n, 0);
}

static void test_plan_refuses(void **state)
{
    const struct dw_migration_file dup[] = {
        {"001_one.sql", "SELECT 1", 8},
        {"01_also_one.sql", "SELECT 1", 8},
    };
    const struct dw_migration_file badname[] = {{"one.sql", "SELECT 1", 8}};
    const struct dw_migration_file empty[] = {{"001_one.sql", "", 0}};
    struct dw_migration *list = (struct dw_migration *)&list;
    size_t n = 99;

    (void)state;
    assert_int_equal(dw_migrate_plan(dup, 2, &list, &n), -EEXIST);
    assert_int_equal(dw_migrate_plan(badname, 1, &list, &n), -EINVAL);
    assert_int_equal(dw_migrate_plan(empty, 1, &list, &n), -EINVAL);
    assert_int_equal(n, 99); /* outputs untouched */
    assert_int_equal(dw_migrate_plan(NULL, 1, &list, &n), -EINVAL);
    assert_int_equal(dw_migrate_plan(dup, 2, NULL, &n), -EINVAL);
}

static void test_line_of_position(void **state)
{
    const char *sql = "-- comment\nCREATE TABLE a (x int);\n\nCREATE TABLE é (y intt);\n";

    (void)state;
    assert_int_equal(line_of(sql, 1), 1);
    assert_int_equal(line_of(sql, 11), 1); /* the newline ending line 1 */
    assert_int_equal(line_of(sql, 12), 2);
    assert_int_equal(line_of(sql, 36), 3);
    /* 'é' is two bytes but one character: "intt" starts at character 55 on line 4. */
    assert_int_equal(line_of(sql, 55), 4);
    assert_int_equal(line_of(sql, 1000), 5);
}

/* Does text hold a line starting with word (any case, after blanks), as a statement would? */
static bool has_statement(const char *text, const char *word)
{
    size_t len = strlen(word);

    for (const char *line = text; line; line = strchr(line, '\n')) {
        if (*line == '\n')
            line++;
        while (*line == ' ' || *line == '\t')
            line++;
        if (strncasecmp(line, word, len) == 0 && !isalnum((unsigned char)line[len]))
            return true;
    }
    return false;
}

/* The migrations in this build: they plan, are numbered 1..n, and every file is applied
 * inside the runner's transaction, so none may open or end one itself. */
static void test_embedded_migrations(void **state)
{
    static const char *const forbidden[] = {"BEGIN", "COMMIT", "ROLLBACK", "START TRANSACTION",
                                            NULL};
    struct dw_migration *list;
    size_t n;

    (void)state;
    assert_true(dw_migration_file_count >= 3);
    assert_int_equal(dw_migrate_plan(dw_migration_files, dw_migration_file_count, &list, &n), 0);
    assert_int_equal(n, dw_migration_file_count);
    for (size_t i = 0; i < n; i++) {
        if (list[i].version != (int)i + 1)
            fail_msg("migration %s has version %d, expected %zu (no gaps)", list[i].name,
                     list[i].version, i + 1);
        assert_int_equal(strlen(list[i].sql), dw_migration_files[i].len);
        for (size_t j = 0; forbidden[j]; j++) {
            if (has_statement(list[i].sql, forbidden[j]))
                fail_msg("migration %s has a %s statement; the runner owns the transaction",
                         list[i].name, forbidden[j]);
        }
    }
    assert_string_equal(list[0].name, "deals");
    assert_non_null(strstr(list[0].sql, "CREATE TABLE deals"));
    free(list);

    /* The lint itself. */
    assert_true(has_statement("SELECT 1;\n  commit;\n", "COMMIT"));
    assert_false(has_statement("-- BEGINning\nCREATE TABLE committed (x int);\n", "COMMIT"));
    assert_false(has_statement("BEGINNING", "BEGIN"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_good_names),       cmocka_unit_test(test_parse_bad_names),
        cmocka_unit_test(test_plan_orders_by_version), cmocka_unit_test(test_plan_refuses),
        cmocka_unit_test(test_line_of_position),       cmocka_unit_test(test_embedded_migrations),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
