/*
 * test_config — dw_config_load() through its public contract: defaults, each source and their
 * precedence, every way a value can be refused (exit 2 with one line naming flag, value and
 * source), --help and --version, and that docs/configuration.md still carries the table that
 * dw_config_write_markdown() prints.
 */
#include "dealwire/config.h"
#include "dealwire/log.h"
#include "dealwire/proxy.h"

#include <ctype.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "test_util.h"

#ifndef DW_VERSION
#define DW_VERSION "0.1.0"
#endif

#ifndef DW_SOURCE_DIR
#error "DW_SOURCE_DIR must name the source tree, as a string, to find docs/configuration.md"
#endif

/* ------------------------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------------------------ */

/* One call of dw_config_load() with out and err captured. */
struct run {
    int rc;
    struct dw_config cfg;
    char *out, *err;
    size_t out_len, err_len;
};

static void load(struct run *r, char **argv, char **envp)
{
    char *no_env[] = {NULL};
    FILE *out, *err;
    int argc = 0;

    while (argv[argc])
        argc++;
    memset(r, 0, sizeof(*r));
    out = open_memstream(&r->out, &r->out_len);
    err = open_memstream(&r->err, &r->err_len);
    assert_non_null(out);
    assert_non_null(err);
    r->rc = dw_config_load(&r->cfg, argc, argv, envp ? envp : no_env, out, err);
    fclose(out);
    fclose(err);
}

static void release(struct run *r)
{
    dw_config_destroy(&r->cfg);
    free(r->out);
    free(r->err);
}

/* Writes content to a new temporary file; returns its path, which the caller frees after
 * unlink(). */
static char *write_temp(const char *content)
{
    char *path = strdup("/tmp/dw_test_config_XXXXXX");
    FILE *f;
    int fd;

    assert_non_null(path);
    fd = mkstemp(path);
    assert_true(fd >= 0);
    f = fdopen(fd, "w");
    assert_non_null(f);
    assert_true(fputs(content, f) >= 0);
    assert_int_equal(fclose(f), 0);
    return path;
}

static void remove_temp(char *path)
{
    unlink(path);
    free(path);
}

/* Returns a new string: s with every "@FILE" replaced by path. */
static char *subst(const char *s, const char *path)
{
    size_t cap = strlen(s) + 1;
    char *res, *p;
    const char *at;

    for (at = strstr(s, "@FILE"); at; at = strstr(at + 5, "@FILE"))
        cap += strlen(path);
    res = p = malloc(cap);
    assert_non_null(res);
    while ((at = strstr(s, "@FILE")) != NULL) {
        memcpy(p, s, (size_t)(at - s));
        p += at - s;
        p = stpcpy(p, path);
        s = at + 5;
    }
    memcpy(p, s, strlen(s) + 1);
    return res;
}

/* The Markdown table, in storage the caller provides: gcc 12 at -O2 mistakes a memstream
 * buffer returned from a helper's own local for a dangling pointer. Free md->text. */
struct text {
    char *text;
    size_t len;
};

static void markdown_table(struct text *md)
{
    FILE *f = open_memstream(&md->text, &md->len);

    assert_non_null(f);
    dw_config_write_markdown(f);
    fclose(f);
}

static char *read_file(const char *path)
{
    char *text = NULL;
    size_t cap = 0;
    FILE *f = fopen(path, "r");
    ssize_t n;

    if (!f)
        fail_msg("cannot open %s: %s", path, strerror(errno));
    n = getdelim(&text, &cap, '\0', f);
    fclose(f);
    assert_true(n >= 0);
    return text;
}

static int count_char(const char *s, char c)
{
    int n = 0;

    for (; *s; s++)
        n += *s == c;
    return n;
}

/* A failed load leaves nothing to free and no half-loaded values. */
static void assert_cfg_empty(const struct dw_config *cfg)
{
    assert_null(cfg->host);
    assert_null(cfg->config_file);
    assert_null(cfg->db);
    assert_false(cfg->load_demo_data);
    assert_int_equal(cfg->port, 0);
    assert_int_equal(cfg->workers, 0);
}

/* ------------------------------------------------------------------------------------------
 * Defaults and sources
 * ------------------------------------------------------------------------------------------ */

static void test_defaults(void **state)
{
    char *argv[] = {"dealwire", NULL};
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    struct run r;

    (void)state;
    /* One worker fewer than cores, so the I/O thread has a core of its own; at least one. */
    cores = cores < 2 ? 1 : cores - 1 > 256 ? 256 : cores - 1;
    load(&r, argv, NULL);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.out_len, 0);
    assert_int_equal(r.err_len, 0);
    assert_string_equal(r.cfg.host, "0.0.0.0");
    assert_int_equal(r.cfg.port, 8000);
    assert_int_equal(r.cfg.workers, cores);
    assert_int_equal(r.cfg.heartbeat_interval, 30);
    assert_int_equal(r.cfg.stale_timeout, 60);
    assert_int_equal(r.cfg.queue_size, 100);
    assert_int_equal(r.cfg.max_message_size, 4096);
    assert_int_equal(r.cfg.max_subscriptions, 64);
    assert_int_equal(r.cfg.max_publish_size, 1024 * 1024);
    assert_int_equal(r.cfg.shutdown_timeout, 3000);
    assert_int_equal(r.cfg.event_loop, DW_EVENT_LOOP_UV);
    assert_int_equal(r.cfg.log_level, DW_LOG_INFO);
    assert_int_equal(r.cfg.log_format, DW_LOG_TEXT);
    assert_null(r.cfg.config_file);
    assert_null(r.cfg.db);
    assert_false(r.cfg.load_demo_data);
    assert_int_equal(r.cfg.hot_deal_interval, 60);
    assert_int_equal(r.cfg.trending_interval, 300);
    assert_int_equal(r.cfg.watch_interval, 30);
    release(&r);
}

/* An empty argv (argc 0) and a NULL envp are the defaults too. */
static void test_empty_argv_and_envp(void **state)
{
    struct dw_config cfg;
    int rc;

    (void)state;
    rc = dw_config_load(&cfg, 0, NULL, NULL, stdout, stderr);
    assert_int_equal(rc, 0);
    assert_int_equal(cfg.port, 8000);
    dw_config_destroy(&cfg);
}

/* Each int setting, set to a value other than its default from each of the four ways. */
static const struct int_case {
    const char *flag, *env, *value;
    size_t offset;
    int want;
} int_cases[] = {
    {"port", "DEALWIRE_PORT", "9000", offsetof(struct dw_config, port), 9000},
    {"workers", "DEALWIRE_WORKERS", "256", offsetof(struct dw_config, workers), 256},
    {"heartbeat-interval", "DEALWIRE_HEARTBEAT_INTERVAL", "1",
     offsetof(struct dw_config, heartbeat_interval), 1},
    {"stale-timeout", "DEALWIRE_STALE_TIMEOUT", "7200", offsetof(struct dw_config, stale_timeout),
     7200},
    {"queue-size", "DEALWIRE_QUEUE_SIZE", "100000", offsetof(struct dw_config, queue_size), 100000},
    {"max-message-size", "DEALWIRE_MAX_MESSAGE_SIZE", "64",
     offsetof(struct dw_config, max_message_size), 64},
    {"max-subscriptions", "DEALWIRE_MAX_SUBSCRIPTIONS", "10000",
     offsetof(struct dw_config, max_subscriptions), 10000},
    {"max-publish-size", "DEALWIRE_MAX_PUBLISH_SIZE", "67108864",
     offsetof(struct dw_config, max_publish_size), 64 * 1024 * 1024},
    {"shutdown-timeout", "DEALWIRE_SHUTDOWN_TIMEOUT", "0",
     offsetof(struct dw_config, shutdown_timeout), 0},
    {"hot-deal-interval", "DEALWIRE_HOT_DEAL_INTERVAL", "1",
     offsetof(struct dw_config, hot_deal_interval), 1},
    {"trending-interval", "DEALWIRE_TRENDING_INTERVAL", "86400",
     offsetof(struct dw_config, trending_interval), 86400},
    {"watch-interval", "DEALWIRE_WATCH_INTERVAL", "5", offsetof(struct dw_config, watch_interval),
     5},
};

static int field(const struct dw_config *cfg, size_t offset)
{
    int v;

    memcpy(&v, (const char *)cfg + offset, sizeof(v));
    return v;
}

static void test_each_source_sets_each_int(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(int_cases) / sizeof(int_cases[0]); i++) {
        const struct int_case *c = &int_cases[i];
        char flag[64], joined[96], env[96], line[96];
        struct run r;
        char *path;

        snprintf(flag, sizeof(flag), "--%s", c->flag);
        snprintf(joined, sizeof(joined), "--%s=%s", c->flag, c->value);
        snprintf(env, sizeof(env), "%s=%s", c->env, c->value);
        snprintf(line, sizeof(line), "%s = %s\n", c->flag, c->value);

        char *argv_space[] = {"dealwire", flag, (char *)c->value, NULL};
        load(&r, argv_space, NULL);
        assert_int_equal(r.rc, 0);
        assert_int_equal(field(&r.cfg, c->offset), c->want);
        release(&r);

        char *argv_eq[] = {"dealwire", joined, NULL};
        load(&r, argv_eq, NULL);
        assert_int_equal(r.rc, 0);
        assert_int_equal(field(&r.cfg, c->offset), c->want);
        release(&r);

        char *argv_none[] = {"dealwire", NULL};
        char *envp[] = {"HOME=/", env, NULL};
        load(&r, argv_none, envp);
        assert_int_equal(r.rc, 0);
        assert_int_equal(field(&r.cfg, c->offset), c->want);
        release(&r);

        path = write_temp(line);
        char *argv_file[] = {"dealwire", "--config", path, NULL};
        load(&r, argv_file, NULL);
        assert_int_equal(r.rc, 0);
        assert_int_equal(field(&r.cfg, c->offset), c->want);
        assert_string_equal(r.cfg.config_file, path);
        release(&r);
        remove_temp(path);
    }
}

static void test_strings_and_enums(void **state)
{
    char *argv[] = {"dealwire",          "--host", "127.0.0.1", "--event-loop=poll",
                    "--log-level=debug", NULL};
    char *envp[] = {"DEALWIRE_HOST=::1", "DEALWIRE_LOG_LEVEL=error", NULL};
    char *no_args[] = {"dealwire", NULL};
    struct run r;

    (void)state;
    load(&r, argv, NULL);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.cfg.host, "127.0.0.1");
    assert_int_equal(r.cfg.event_loop, DW_EVENT_LOOP_POLL);
    assert_int_equal(r.cfg.log_level, DW_LOG_DEBUG);
    release(&r);

    load(&r, no_args, envp);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.cfg.host, "::1");
    assert_int_equal(r.cfg.log_level, DW_LOG_ERROR);
    release(&r);

    /* The enum's words map to the enum's values. */
    const char *levels[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++) {
        char arg[32];
        char *argv_level[] = {"dealwire", arg, NULL};

        snprintf(arg, sizeof(arg), "--log-level=%s", levels[i]);
        load(&r, argv_level, NULL);
        assert_int_equal(r.rc, 0);
        assert_int_equal(r.cfg.log_level, dw_log_level_parse(levels[i]));
        release(&r);
    }

    /* --log-format and its variable. */
    char *argv_json[] = {"dealwire", "--log-format", "json", NULL};
    char *envp_json[] = {"DEALWIRE_LOG_FORMAT=json", NULL};
    char *argv_text[] = {"dealwire", "--log-format=text", NULL};

    load(&r, argv_json, NULL);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.cfg.log_format, DW_LOG_JSON);
    release(&r);
    load(&r, no_args, envp_json);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.cfg.log_format, DW_LOG_JSON);
    release(&r);
    load(&r, argv_text, envp_json); /* the command line over the environment */
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.cfg.log_format, DW_LOG_TEXT);
    release(&r);
}

/* --allowed-origins is split once, at load, into cfg.origins: entries trimmed, in order, exactly
 * as browsers send them; no list means NULL (any origin). */
static void test_origin_list(void **state)
{
    char *argv[] = {"dealwire", "--allowed-origins",
                    " https://deals.example ,http://127.0.0.1:8080,https://[::1]:8443", NULL};
    char *no_args[] = {"dealwire", NULL};
    struct run r;

    (void)state;
    load(&r, argv, NULL);
    assert_int_equal(r.rc, 0);
    assert_non_null(r.cfg.origins);
    assert_string_equal(r.cfg.origins[0], "https://deals.example");
    assert_string_equal(r.cfg.origins[1], "http://127.0.0.1:8080");
    assert_string_equal(r.cfg.origins[2], "https://[::1]:8443");
    assert_null(r.cfg.origins[3]);
    release(&r);
    assert_null(r.cfg.origins);

    load(&r, no_args, NULL);
    assert_int_equal(r.rc, 0);
    assert_null(r.cfg.origins);
    release(&r);
}

/* --trusted-proxies is parsed once, at load, into cfg.trusted; none means no entries. */
static void test_trusted_list(void **state)
{
    char *argv[] = {"dealwire", "--trusted-proxies", "127.0.0.1, 10.0.0.0/8,2001:db8::/32", NULL};
    char *no_args[] = {"dealwire", NULL};
    struct run r;

    (void)state;
    load(&r, argv, NULL);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.cfg.ntrusted, 3);
    assert_int_equal(r.cfg.trusted[1].bits, 96 + 8);
    assert_int_equal(r.cfg.trusted[2].bits, 32);
    release(&r);
    assert_null(r.cfg.trusted);

    load(&r, no_args, NULL);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.cfg.ntrusted, 0);
    release(&r);
}

/* defaults < file < environment < command line, setting by setting. */
static void test_precedence(void **state)
{
    char *path = write_temp("port = 1111\nworkers = 3\nqueue-size = 7\nhost = file.example\n");
    char *argv[] = {"dealwire", "--port", "3333", "--config", path, NULL};
    char *envp[] = {"DEALWIRE_PORT=2222", "DEALWIRE_WORKERS=4", "DEALWIRE_LOG_LEVEL=warn", NULL};
    struct run r;

    (void)state;
    load(&r, argv, envp);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.cfg.port, 3333);    /* command line over env and file */
    assert_int_equal(r.cfg.workers, 4);    /* env over file */
    assert_int_equal(r.cfg.queue_size, 7); /* file over default */
    assert_string_equal(r.cfg.host, "file.example");
    assert_int_equal(r.cfg.log_level, DW_LOG_WARN); /* env over default */
    assert_int_equal(r.cfg.max_subscriptions, 64);  /* default */
    release(&r);
    remove_temp(path);
}

/* Within one source the last value wins. */
static void test_last_one_wins(void **state)
{
    char *argv[] = {"dealwire", "--port", "1", "--port=2", NULL};
    char *path = write_temp("port = 10\nport = 20\n");
    char *argv_file[] = {"dealwire", "--config", path, NULL};
    struct run r;

    (void)state;
    load(&r, argv, NULL);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.cfg.port, 2);
    release(&r);

    load(&r, argv_file, NULL);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.cfg.port, 20);
    release(&r);
    remove_temp(path);
}

static void test_config_file_from_env(void **state)
{
    char *path = write_temp("queue-size = 9\n");
    char *env_config = subst("DEALWIRE_CONFIG=@FILE", path);
    char *argv[] = {"dealwire", NULL};
    char *envp[] = {env_config, NULL};
    struct run r;

    (void)state;
    load(&r, argv, envp);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.cfg.queue_size, 9);
    assert_string_equal(r.cfg.config_file, path);
    release(&r);
    free(env_config);
    remove_temp(path);
}

/* --config wins over DEALWIRE_CONFIG: the file the env names is not even opened. */
static void test_argv_config_beats_env_config(void **state)
{
    char *path = write_temp("queue-size = 9\n");
    char *argv_full[] = {"dealwire", "--config", path, NULL};
    char *envp[] = {"DEALWIRE_CONFIG=/nonexistent/dealwire.conf", NULL};
    struct run r;

    (void)state;
    load(&r, argv_full, envp);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.cfg.queue_size, 9);
    assert_string_equal(r.cfg.config_file, path);
    release(&r);
    remove_temp(path);
}

static void test_file_syntax(void **state)
{
    char *path = write_temp("# dealwire settings\n"
                            "\n"
                            "   \t\n"
                            "  # indented comment\n"
                            "\thost\t=\t\"10.0.0.1\"  \n"
                            "port=8080\r\n"
                            "event-loop = 'poll'\n"
                            "log-level = debug");
    char *argv[] = {"dealwire", "--config", path, NULL};
    struct run r;

    (void)state;
    load(&r, argv, NULL);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.err, "");
    assert_string_equal(r.cfg.host, "10.0.0.1");
    assert_int_equal(r.cfg.port, 8080);
    assert_int_equal(r.cfg.event_loop, DW_EVENT_LOOP_POLL);
    assert_int_equal(r.cfg.log_level, DW_LOG_DEBUG); /* last line has no newline */
    release(&r);
    remove_temp(path);
}

/* --db defaults to DATABASE_URL (when set and not empty); every other source overrides it. */
static void test_db_default_from_database_url(void **state)
{
    char *path = write_temp("db = from-file\n");
    char *none[] = {"dealwire", NULL};
    char *with_file[] = {"dealwire", "--config", path, NULL};
    char *with_flag[] = {"dealwire", "--db", "postgresql://h/argv", NULL};
    char *env_url[] = {"DATABASE_URL=postgresql://u@h:5/app", NULL};
    char *env_empty[] = {"DATABASE_URL=", NULL};
    char *env_both[] = {"DATABASE_URL=postgresql://h/url", "DEALWIRE_DB=host=h dbname=env", NULL};
    struct run r;

    (void)state;
    load(&r, none, env_url);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.cfg.db, "postgresql://u@h:5/app");
    release(&r);

    load(&r, none, env_empty);
    assert_int_equal(r.rc, 0);
    assert_null(r.cfg.db);
    release(&r);

    load(&r, none, env_both);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.cfg.db, "host=h dbname=env");
    release(&r);

    load(&r, with_file, env_url);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.cfg.db, "from-file");
    release(&r);

    load(&r, with_flag, env_both);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.cfg.db, "postgresql://h/argv");
    release(&r);
    remove_temp(path);
}

/* A boolean: its flag alone means true and never takes the next word; as a value it takes
 * true/false, yes/no, on/off, 1/0 from every source. */
static void test_bool_setting(void **state)
{
    static const struct {
        const char *word;
        bool want;
    } words[] = {{"true", true}, {"false", false}, {"yes", true}, {"no", false},
                 {"on", true},   {"off", false},   {"1", true},   {"0", false}};
    char *alone[] = {"dealwire", "--load-demo-data", NULL};
    char *before_flag[] = {"dealwire", "--load-demo-data", "--port", "81", NULL};
    char *argv_wins[] = {"dealwire", "--load-demo-data=false", NULL};
    char *env_on[] = {"DEALWIRE_LOAD_DEMO_DATA=1", NULL};
    struct run r;

    (void)state;
    load(&r, alone, NULL);
    assert_int_equal(r.rc, 0);
    assert_true(r.cfg.load_demo_data);
    release(&r);

    load(&r, before_flag, NULL);
    assert_int_equal(r.rc, 0);
    assert_true(r.cfg.load_demo_data);
    assert_int_equal(r.cfg.port, 81);
    release(&r);

    load(&r, argv_wins, env_on);
    assert_int_equal(r.rc, 0);
    assert_false(r.cfg.load_demo_data);
    release(&r);

    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        char arg[64], env[64], line[64];
        char *path;

        snprintf(arg, sizeof(arg), "--load-demo-data=%s", words[i].word);
        snprintf(env, sizeof(env), "DEALWIRE_LOAD_DEMO_DATA=%s", words[i].word);
        snprintf(line, sizeof(line), "load-demo-data = %s\n", words[i].word);

        char *argv_eq[] = {"dealwire", arg, NULL};
        load(&r, argv_eq, NULL);
        assert_int_equal(r.rc, 0);
        assert_int_equal(r.cfg.load_demo_data, words[i].want);
        release(&r);

        char *argv_none[] = {"dealwire", NULL};
        char *envp[] = {env, NULL};
        load(&r, argv_none, envp);
        assert_int_equal(r.rc, 0);
        assert_int_equal(r.cfg.load_demo_data, words[i].want);
        release(&r);

        path = write_temp(line);
        char *argv_file[] = {"dealwire", "--config", path, NULL};
        load(&r, argv_file, NULL);
        assert_int_equal(r.rc, 0);
        assert_int_equal(r.cfg.load_demo_data, words[i].want);
        release(&r);
        remove_temp(path);
    }
}

/* Only DEALWIRE_* names that are settings count; the rest of the environment is not ours. */
static void test_unknown_env_ignored(void **state)
{
    char *argv[] = {"dealwire", NULL};
    char *envp[] = {"PORT=abc",
                    "DEALWIRE_NOPE=abc",
                    "DEALWIRE_PORTS=abc",
                    "DEALWIRE_PORT",
                    "DEALWIRE_port=abc",
                    "XDEALWIRE_PORT=abc",
                    NULL};
    struct run r;

    (void)state;
    load(&r, argv, envp);
    assert_int_equal(r.rc, 0);
    assert_int_equal(r.cfg.port, 8000);
    release(&r);
}

/* ------------------------------------------------------------------------------------------
 * Refused values: exit 2, one line on err naming flag, value and source
 * ------------------------------------------------------------------------------------------ */

/* "@FILE" in argv, envp or want stands for the path of a temp file holding file. */
static const struct bad_case {
    const char *name;
    char *argv[6];
    char *envp[3];
    const char *file;
    const char *want[4];
} bad_cases[] = {
    {"not a number",
     {"--port", "abc"},
     {0},
     NULL,
     {"invalid value \"abc\" for --port (from the command line)", "1..65535"}},
    {"trailing junk", {"--port=80x"}, {0}, NULL, {"\"80x\"", "--port", "command line"}},
    {"hex is junk", {"--port", "0x50"}, {0}, NULL, {"\"0x50\"", "--port", "command line"}},
    {"leading space", {"--port", " 80"}, {0}, NULL, {"\" 80\"", "--port", "command line"}},
    {"empty", {"--port="}, {0}, NULL, {"\"\" for --port", "command line"}},
    {"overflow",
     {"--port", "99999999999999999999"},
     {0},
     NULL,
     {"\"99999999999999999999\"", "--port", "command line"}},
    {"port 0", {"--port", "0"}, {0}, NULL, {"\"0\" for --port", "command line", "1..65535"}},
    {"port 65536", {"--port", "65536"}, {0}, NULL, {"\"65536\" for --port", "command line"}},
    {"workers 0", {"--workers", "0"}, {0}, NULL, {"\"0\" for --workers", "1..256"}},
    {"workers 257", {"--workers", "257"}, {0}, NULL, {"\"257\" for --workers", "1..256"}},
    {"queue-size 0", {"--queue-size", "0"}, {0}, NULL, {"\"0\" for --queue-size", "1..100000"}},
    {"queue-size big", {"--queue-size", "100001"}, {0}, NULL, {"\"100001\" for --queue-size"}},
    {"publish small",
     {"--max-publish-size", "1023"},
     {0},
     NULL,
     {"\"1023\" for --max-publish-size", "1024..67108864"}},
    {"publish big",
     {"--max-publish-size", "67108865"},
     {0},
     NULL,
     {"\"67108865\" for --max-publish-size"}},
    {"shutdown negative",
     {"--shutdown-timeout", "-1"},
     {0},
     NULL,
     {"\"-1\" for --shutdown-timeout", "0..60000"}},
    {"shutdown big",
     {"--shutdown-timeout", "60001"},
     {0},
     NULL,
     {"\"60001\" for --shutdown-timeout"}},
    {"message small",
     {"--max-message-size", "63"},
     {0},
     NULL,
     {"\"63\" for --max-message-size", "64..16777216"}},
    {"subscriptions big",
     {"--max-subscriptions", "10001"},
     {0},
     NULL,
     {"\"10001\" for --max-subscriptions", "1..10000"}},
    {"heartbeat 0",
     {"--heartbeat-interval", "0"},
     {0},
     NULL,
     {"\"0\" for --heartbeat-interval", "1..3600"}},
    {"stale big", {"--stale-timeout", "7201"}, {0}, NULL, {"\"7201\" for --stale-timeout"}},
    {"unknown enum word",
     {"--event-loop", "epoll"},
     {0},
     NULL,
     {"\"epoll\" for --event-loop", "command line", "poll, uv"}},
    {"enum is case sensitive",
     {"--log-level=INFO"},
     {0},
     NULL,
     {"\"INFO\" for --log-level", "error, warn, info, debug"}},
    {"unknown log format",
     {"--log-format", "yaml"},
     {0},
     NULL,
     {"\"yaml\" for --log-format", "command line", "text, json"}},
    {"empty host", {"--host="}, {0}, NULL, {"\"\" for --host", "command line"}},
    {"unknown flag", {"--bogus", "1"}, {0}, NULL, {"unknown flag \"--bogus\"", "command line"}},
    {"unknown flag with value", {"--bogus=1"}, {0}, NULL, {"\"--bogus=1\"", "command line"}},
    {"single dash", {"-port", "1"}, {0}, NULL, {"\"-port\"", "command line"}},
    {"positional", {"foo"}, {0}, NULL, {"unexpected argument \"foo\"", "command line"}},
    {"missing value at end",
     {"--workers", "2", "--port"},
     {0},
     NULL,
     {"missing value for --port (from the command line)"}},
    {"missing value before flag",
     {"--host", "--port", "80"},
     {0},
     NULL,
     {"missing value for --host (from the command line)"}},
    {"env not a number",
     {0},
     {"DEALWIRE_PORT=abc"},
     NULL,
     {"invalid value \"abc\" for --port (from DEALWIRE_PORT): expected an integer in 1..65535"}},
    {"env out of bounds",
     {0},
     {"HOME=/", "DEALWIRE_WORKERS=0"},
     NULL,
     {"\"0\" for --workers", "DEALWIRE_WORKERS"}},
    {"env enum",
     {0},
     {"DEALWIRE_LOG_LEVEL=loud"},
     NULL,
     {"\"loud\" for --log-level", "DEALWIRE_LOG_LEVEL"}},
    {"env log format",
     {0},
     {"DEALWIRE_LOG_FORMAT=JSON"},
     NULL,
     {"\"JSON\" for --log-format", "DEALWIRE_LOG_FORMAT"}},
    {"env empty config", {0}, {"DEALWIRE_CONFIG="}, NULL, {"\"\" for --config", "DEALWIRE_CONFIG"}},
    {"env bad even when argv overrides",
     {"--port", "80"},
     {"DEALWIRE_PORT=x"},
     NULL,
     {"\"x\" for --port", "DEALWIRE_PORT"}},
    {"file not a number",
     {"--config", "@FILE"},
     {0},
     "# c\n\nport = abc\n",
     {"invalid value \"abc\" for --port (from @FILE:3)"}},
    {"file trailing comment",
     {"--config", "@FILE"},
     {0},
     "port = 80 # main\n",
     {"\"80 # main\" for --port", "@FILE:1"}},
    {"file unknown key",
     {"--config", "@FILE"},
     {0},
     "port = 80\nbogus = 1\n",
     {"unknown key \"bogus\" = \"1\"", "@FILE:2"}},
    {"file garbage line",
     {"--config", "@FILE"},
     {0},
     "just words\n",
     {"unknown key \"just words\"", "@FILE:1"}},
    {"file missing value",
     {"--config", "@FILE"},
     {0},
     "port\n",
     {"missing value for --port (from @FILE:1)"}},
    {"file empty value", {"--config", "@FILE"}, {0}, "port =\n", {"\"\" for --port", "@FILE:1"}},
    {"file names a file",
     {"--config", "@FILE"},
     {0},
     "config = /x\n",
     {"key \"config\" = \"/x\"", "@FILE:1"}},
    {"file out of bounds via env path",
     {0},
     {"DEALWIRE_CONFIG=@FILE"},
     "queue-size = 0\n",
     {"\"0\" for --queue-size", "@FILE:1"}},
    {"file enum",
     {"--config=@FILE"},
     {0},
     "event-loop = epoll\n",
     {"\"epoll\" for --event-loop", "@FILE:1"}},
    {"unreadable file",
     {"--config", "/nonexistent/dealwire.conf"},
     {0},
     NULL,
     {"\"/nonexistent/dealwire.conf\" for --config (from the command line)",
      "No such file or directory"}},
    {"unreadable file from env",
     {0},
     {"DEALWIRE_CONFIG=/nonexistent/dealwire.conf"},
     NULL,
     {"\"/nonexistent/dealwire.conf\" for --config (from DEALWIRE_CONFIG)"}},
    {"directory as file",
     {"--config", "/"},
     {0},
     NULL,
     {"\"/\" for --config (from the command line)", "Is a directory"}},
    {"stale not above heartbeat",
     {"--stale-timeout", "30"},
     {0},
     NULL,
     {"\"30\" for --stale-timeout (from the command line)", "--heartbeat-interval (30"}},
    {"heartbeat not below stale",
     {"--heartbeat-interval", "60"},
     {0},
     NULL,
     {"\"60\" for --heartbeat-interval (from the command line)", "--stale-timeout (60"}},
    {"both on the line: stale named",
     {"--heartbeat-interval=90", "--stale-timeout=90"},
     {0},
     NULL,
     {"\"90\" for --stale-timeout (from the command line)"}},
    {"env heartbeat over file stale",
     {"--config", "@FILE"},
     {"DEALWIRE_HEARTBEAT_INTERVAL=20"},
     "stale-timeout = 20\n",
     {"\"20\" for --heartbeat-interval (from DEALWIRE_HEARTBEAT_INTERVAL)", "@FILE:1"}},
    {"bool word",
     {"--load-demo-data=maybe"},
     {0},
     NULL,
     {"invalid value \"maybe\" for --load-demo-data (from the command line): expected true or "
      "false"}},
    {"bool is case sensitive", {"--load-demo-data=TRUE"}, {0}, NULL, {"\"TRUE\"", "true or false"}},
    {"bool empty", {"--load-demo-data="}, {0}, NULL, {"\"\" for --load-demo-data"}},
    {"bare bool takes no word",
     {"--load-demo-data", "true"},
     {0},
     NULL,
     {"unexpected argument \"true\"", "command line"}},
    {"env bool",
     {0},
     {"DEALWIRE_LOAD_DEMO_DATA=2"},
     NULL,
     {"\"2\" for --load-demo-data", "DEALWIRE_LOAD_DEMO_DATA"}},
    {"file bool",
     {"--config", "@FILE"},
     {0},
     "load-demo-data = sometimes\n",
     {"\"sometimes\" for --load-demo-data", "@FILE:1"}},
    {"empty db", {"--db="}, {0}, NULL, {"\"\" for --db", "command line"}},
    {"env empty db", {0}, {"DEALWIRE_DB="}, NULL, {"\"\" for --db", "DEALWIRE_DB"}},
    {"hot-deal interval 0",
     {"--hot-deal-interval", "0"},
     {0},
     NULL,
     {"\"0\" for --hot-deal-interval", "1..86400"}},
    {"trending interval big",
     {"--trending-interval=86401"},
     {0},
     NULL,
     {"\"86401\" for --trending-interval", "1..86400"}},
    {"watch interval junk",
     {0},
     {"DEALWIRE_WATCH_INTERVAL=30s"},
     NULL,
     {"\"30s\" for --watch-interval", "DEALWIRE_WATCH_INTERVAL"}},
    {"jwt secret too short, and not echoed",
     {"--jwt-secret", "tiny-secret-value"},
     {0},
     NULL,
     {"invalid value (hidden) for --jwt-secret (from the command line)", "at least 32 bytes"}},
    {"api token too short",
     {0},
     {"DEALWIRE_API_TOKEN=short"},
     NULL,
     {"(hidden) for --api-token (from DEALWIRE_API_TOKEN)", "at least 16 bytes"}},
    {"origin with a path",
     {"--allowed-origins", "https://a.example,https://b.example/app"},
     {0},
     NULL,
     {"\"https://a.example,https://b.example/app\" for --allowed-origins", "no path"}},
    {"origin without a scheme",
     {"--allowed-origins", "deals.example"},
     {0},
     NULL,
     {"--allowed-origins", "scheme://host[:port]"}},
    {"origin list with an empty entry",
     {"--allowed-origins", "https://a.example,,https://b.example"},
     {0},
     NULL,
     {"--allowed-origins"}},
    {"trusted proxy that is a host name",
     {"--trusted-proxies", "10.0.0.0/8,lb.example"},
     {0},
     NULL,
     {"\"10.0.0.0/8,lb.example\" for --trusted-proxies",
      "\"lb.example\" is not an address or address/prefix-length"}},
    {"trusted network with a prefix too long",
     {0},
     {"DEALWIRE_TRUSTED_PROXIES=10.0.0.0/33"},
     NULL,
     {"--trusted-proxies (from DEALWIRE_TRUSTED_PROXIES)", "is not an address"}},
    {"tls cert without key",
     {"--tls-cert", "/etc/ssl/cert.pem"},
     {0},
     NULL,
     {"dealwire: --tls-cert (from the command line) needs --tls-key"}},
    {"tls key without cert",
     {0},
     {"DEALWIRE_TLS_KEY=/etc/ssl/key.pem"},
     NULL,
     {"--tls-key (from DEALWIRE_TLS_KEY) needs --tls-cert"}},
    {"two jwt keys",
     {"--jwt-secret", "0123456789abcdef0123456789abcdef", "--jwt-public-key", "/k.pem"},
     {0},
     NULL,
     {"--jwt-secret (from the command line) cannot be combined with --jwt-public-key"}},
    {"leeway too large",
     {"--jwt-leeway", "601"},
     {0},
     NULL,
     {"\"601\" for --jwt-leeway", "0..600"}},
    {"rate limit zero", {"--rate-limit", "0"}, {0}, NULL, {"\"0\" for --rate-limit"}},
    {"control characters stay on one line",
     {"--port", "1\n2"},
     {0},
     NULL,
     {"\"1\\x0a2\" for --port"}},
};

static void test_bad_values(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        const struct bad_case *c = &bad_cases[i];
        char *path = write_temp(c->file ? c->file : "");
        char *argv[8] = {"dealwire"};
        char *envp[4] = {0};
        struct run r;

        for (int j = 0; c->argv[j]; j++)
            argv[j + 1] = subst(c->argv[j], path);
        for (int j = 0; c->envp[j]; j++)
            envp[j] = subst(c->envp[j], path);

        load(&r, argv, envp);
        if (r.rc != DW_CONFIG_EXIT_BAD)
            fail_msg("%s: rc %d, err \"%s\"", c->name, r.rc, r.err);
        if (strncmp(r.err, "dealwire: ", 10) != 0 || count_char(r.err, '\n') != 1 ||
            r.err[r.err_len - 1] != '\n')
            fail_msg("%s: not one line: \"%s\"", c->name, r.err);
        for (int j = 0; c->want[j]; j++) {
            char *want = subst(c->want[j], path);

            if (!strstr(r.err, want))
                fail_msg("%s: \"%s\" lacks \"%s\"", c->name, r.err, want);
            free(want);
        }
        assert_int_equal(r.out_len, 0);
        assert_cfg_empty(&r.cfg);
        if (strstr(r.err, "tiny-secret-value") || strstr(r.err, "short\""))
            fail_msg("%s: a secret was echoed: \"%s\"", c->name, r.err);

        release(&r);
        for (int j = 1; argv[j]; j++)
            free(argv[j]);
        for (int j = 0; envp[j]; j++)
            free(envp[j]);
        remove_temp(path);
    }
}

/* ------------------------------------------------------------------------------------------
 * --help, --version, the docs
 * ------------------------------------------------------------------------------------------ */

static void test_help(void **state)
{
    char *argv[] = {"dealwire", "--help", NULL};
    struct text md;
    char flag[64], env[64];
    const char *row;
    int rows = 0;
    struct run r;

    (void)state;
    markdown_table(&md);
    load(&r, argv, NULL);
    assert_int_equal(r.rc, DW_CONFIG_EXIT_OK);
    assert_int_equal(r.err_len, 0);
    assert_non_null(strstr(r.out, "usage: dealwire"));
    assert_cfg_empty(&r.cfg);

    /* Every setting in the table shows up in --help with its env name. */
    for (row = strstr(md.text, "\n| `--"); row; row = strstr(row + 1, "\n| `--")) {
        char want[80];

        assert_int_equal(sscanf(row, "\n| `--%63[^`]` | `%63[^`]` |", flag, env), 2);
        snprintf(want, sizeof(want), "  --%s ", flag);
        assert_non_null(strstr(r.out, want));
        snprintf(want, sizeof(want), "env %s\n", env);
        assert_non_null(strstr(r.out, want));
        rows++;
    }
    assert_int_equal(rows, 38);
    release(&r);
    free(md.text);
}

/* --help wins over a bad value or unknown flag anywhere on the line. */
static void test_help_wins(void **state)
{
    char *argv[] = {"dealwire", "--port", "abc", "--bogus", "--help", NULL};
    char *envp[] = {"DEALWIRE_PORT=abc", NULL};
    struct run r;

    (void)state;
    load(&r, argv, envp);
    assert_int_equal(r.rc, DW_CONFIG_EXIT_OK);
    assert_int_equal(r.err_len, 0);
    assert_non_null(strstr(r.out, "usage: dealwire"));
    release(&r);
}

static void test_version(void **state)
{
    char *argv[] = {"dealwire", "--port=1", "--version", NULL};
    struct run r;

    (void)state;
    load(&r, argv, NULL);
    assert_int_equal(r.rc, DW_CONFIG_EXIT_OK);
    /* The version, then the libwebsockets it runs on (and whether that one pipelines). */
    assert_true(strncmp(r.out, "dealwire " DW_VERSION "\nlibwebsockets 4.", 30) == 0);
    assert_non_null(strstr(r.out, "build"));
    assert_int_equal(r.err_len, 0);
    assert_cfg_empty(&r.cfg);
    release(&r);
}

/* Each env name is DEALWIRE_ + the flag in upper case with '_' for '-', and each flag loads. */
static void test_env_names_follow_flags(void **state)
{
    const char *header = "| flag | env | default | meaning |\n| --- | --- | --- | --- |\n";
    struct text md;
    char flag[64], env[64], want[80];
    const char *row;

    (void)state;
    markdown_table(&md);
    assert_int_equal(strncmp(md.text, header, strlen(header)), 0);
    for (row = strstr(md.text, "\n| `--"); row; row = strstr(row + 1, "\n| `--")) {
        size_t n;

        assert_int_equal(sscanf(row, "\n| `--%63[^`]` | `%63[^`]` |", flag, env), 2);
        n = (size_t)snprintf(want, sizeof(want), "DEALWIRE_");
        for (const char *p = flag; *p; p++)
            want[n++] = (char)(*p == '-' ? '_' : toupper((unsigned char)*p));
        want[n] = '\0';
        assert_string_equal(env, want);
    }
    free(md.text);
}

static void test_docs_in_sync(void **state)
{
    struct text md;
    char *doc = read_file(DW_SOURCE_DIR "/docs/configuration.md");

    (void)state;
    markdown_table(&md);
    if (!strstr(doc, md.text))
        fail_msg("docs/configuration.md does not contain the table dw_config_write_markdown() "
                 "prints; paste this in:\n%s",
                 md.text);
    free(doc);
    free(md.text);
}

/* ------------------------------------------------------------------------------------------
 * Contract edges
 * ------------------------------------------------------------------------------------------ */

static void test_bad_arguments(void **state)
{
    struct dw_config cfg;
    char *argv[] = {"dealwire", NULL};

    (void)state;
    assert_int_equal(dw_config_load(NULL, 1, argv, NULL, stdout, stderr), -EINVAL);
    assert_int_equal(dw_config_load(&cfg, 1, argv, NULL, NULL, stderr), -EINVAL);
    assert_int_equal(dw_config_load(&cfg, 1, argv, NULL, stdout, NULL), -EINVAL);
    assert_int_equal(dw_config_load(&cfg, 1, NULL, NULL, stdout, stderr), -EINVAL);
    assert_int_equal(dw_config_load(&cfg, -1, argv, NULL, stdout, stderr), -EINVAL);
    dw_config_destroy(NULL);
}

static void test_destroy_twice(void **state)
{
    char *argv[] = {"dealwire", "--host", "h", NULL};
    struct run r;

    (void)state;
    load(&r, argv, NULL);
    assert_int_equal(r.rc, 0);
    dw_config_destroy(&r.cfg);
    assert_null(r.cfg.host);
    release(&r); /* destroys again */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_empty_argv_and_envp),
        cmocka_unit_test(test_each_source_sets_each_int),
        cmocka_unit_test(test_strings_and_enums),
        cmocka_unit_test(test_origin_list),
        cmocka_unit_test(test_trusted_list),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_last_one_wins),
        cmocka_unit_test(test_config_file_from_env),
        cmocka_unit_test(test_argv_config_beats_env_config),
        cmocka_unit_test(test_file_syntax),
        cmocka_unit_test(test_db_default_from_database_url),
        cmocka_unit_test(test_bool_setting),
        cmocka_unit_test(test_unknown_env_ignored),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_help_wins),
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_env_names_follow_flags),
        cmocka_unit_test(test_docs_in_sync),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_destroy_twice),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
