/*
 * config — DESIGN: one table, settings[], names every setting once, one constructor call each:
 * its flag (from which its DEALWIRE_* variable follows), type, default, bounds and help.
 * Everything else is a loop over that table: the command-line parser, the DEALWIRE_* loader,
 * the config-file loader, --help and the Markdown table in docs/configuration.md (a unit test
 * checks that the doc still matches). Values the table cannot check alone (lengths, pairs, the
 * origin list) are checked after the load, and the origin list is split here once.
 *
 * dw_config_load() runs on the main thread before any other thread starts. It writes the
 * sources into one struct in increasing precedence (defaults, file, environment, command
 * line), so the last write wins, and it remembers where each value came from so that an error
 * can name its source. After a successful load nobody writes the struct again.
 */
#define DW_LOG_MODULE "config"
#include "dealwire/config.h"
#include "dealwire/log.h"
#include "dealwire/mem.h"
#include "dealwire/proxy.h"

#include <ctype.h>
#include <errno.h>
#include <libwebsockets.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#ifndef DW_VERSION
#define DW_VERSION "0.1.0"
#endif

/* Which libwebsockets: the one scripts/lws.sh builds (DW_LWS=source) takes pipelined HTTP/1.1
 * requests behind a POST (docs/protocol.md, "HTTP API"); Debian's refuses them. */
#if defined(LWS_DW_H1_PIPELINING)
#define DW_LWS_BUILD "dealwire's build: release settings, HTTP/1.1 pipelining"
#else
#define DW_LWS_BUILD "Debian's build: pipelined POSTs refused"
#endif

/* ------------------------------------------------------------------------------------------
 * The table
 * ------------------------------------------------------------------------------------------ */

enum kind {
    KIND_INT,    /* an int field, parsed with strtoll and checked against min..max */
    KIND_STRING, /* a char * field owned by the config, never empty */
    KIND_ENUM,   /* an int-sized enum field, one of words[]: the value is the word's index */
    KIND_BOOL,   /* a bool field; "--flag" alone on the command line means true */
};

/* A setting's environment variable is not stored: it is DEALWIRE_ and the flag in upper case
 * with '_' for '-' (env_is, put_env), so the two can never disagree. */
struct setting {
    const char *flag; /* without the leading "--"; also the config-file key */
    enum kind kind;
    size_t offset;    /* of the field in struct dw_config */
    const char *meta; /* the value's placeholder in --help; enums show their words instead */

    /* The default: def_int for KIND_INT and KIND_BOOL unless def_fn computes it at load time;
     * def_str for the others (NULL: no value), or, when def_env names an environment variable
     * that is set and not empty, its value. def_doc, when set, is what --help and the docs
     * show. */
    long long def_int;
    long long (*def_fn)(void);
    const char *def_str;
    const char *def_env;
    const char *def_doc;

    long long min, max;       /* KIND_INT bounds, inclusive */
    const char *const *words; /* KIND_ENUM: accepted words in value order, NULL-terminated */
    const char *help;
    bool secret; /* never echoed: errors say "(hidden)" instead of the value */
};

/* Enum fields are stored through an int pointer. That is valid C as long as the enum's
 * compatible type is int or unsigned int, which is what gcc and clang pick for these. */
_Static_assert(sizeof(enum dw_event_loop) == sizeof(int), "enum fields are stored as int");

static const char *const event_loop_words[] = {"poll", "uv", NULL};
_Static_assert(DW_EVENT_LOOP_POLL == 0 && DW_EVENT_LOOP_UV == 1, "event_loop_words' order");
/* What a KIND_BOOL accepts: each true word is followed by its false word. */
static const char *const bool_words[] = {"true", "false", "yes", "no", "on", "off", "1", "0", NULL};
static const char *const log_level_words[] = {"error", "warn", "info", "debug", NULL};
_Static_assert(DW_LOG_ERROR == 0 && DW_LOG_WARN == 1 && DW_LOG_INFO == 2 && DW_LOG_DEBUG == 3,
               "log_level_words' order");
static const char *const log_format_words[] = {"text", "json", NULL};
_Static_assert(DW_LOG_TEXT == 0 && DW_LOG_JSON == 1, "log_format_words' order");

static long long workers_default(void);
static long long max_connections_default(void);

#define FIELD(name) offsetof(struct dw_config, name)

/* One constructor per shape of setting; each names the flag once. */
/* clang-format off */
#define INT(flag_, field, meta_, def, lo, hi, help_)                                               \
    {.flag = (flag_), .kind = KIND_INT, .offset = FIELD(field), .meta = (meta_),                   \
     .def_int = (def), .min = (lo), .max = (hi), .help = (help_)}
/* An int whose default depends on the machine: fn() at load time, doc in --help. */
#define INT_COMPUTED(flag_, field, meta_, fn, doc, lo, hi, help_)                                  \
    {.flag = (flag_), .kind = KIND_INT, .offset = FIELD(field), .meta = (meta_), .def_fn = (fn),   \
     .def_doc = (doc), .min = (lo), .max = (hi), .help = (help_)}
#define BOOL(flag_, field, def, help_)                                                             \
    {.flag = (flag_), .kind = KIND_BOOL, .offset = FIELD(field), .def_int = (def),                 \
     .help = (help_)}
/* A string with a default value, or with none (def NULL, "none" in --help). */
#define STRING(flag_, field, meta_, def, help_)                                                    \
    {.flag = (flag_), .kind = KIND_STRING, .offset = FIELD(field), .meta = (meta_),                \
     .def_str = (def), .def_doc = (def) ? NULL : "none", .help = (help_)}
/* A string no error message or log line ever shows. */
#define SECRET(flag_, field, meta_, help_)                                                         \
    {.flag = (flag_), .kind = KIND_STRING, .offset = FIELD(field), .meta = (meta_),                \
     .def_doc = "none", .secret = true, .help = (help_)}
/* A string whose default is another program's environment variable, if set. */
#define STRING_FROM_ENV(flag_, field, meta_, env, help_)                                           \
    {.flag = (flag_), .kind = KIND_STRING, .offset = FIELD(field), .meta = (meta_),                \
     .def_env = (env), .def_doc = env " if set", .help = (help_)}
#define ENUM(flag_, field, def, words_, help_)                                                     \
    {.flag = (flag_), .kind = KIND_ENUM, .offset = FIELD(field), .def_str = (def),                 \
     .words = (words_), .help = (help_)}
/* clang-format on */

#define KIB 1024LL
#define MIB (1024 * KIB)
#define DAY (24 * 3600LL)

static const struct setting settings[] = {
    STRING("host", host, "ADDR", "0.0.0.0", "address to listen on"),
    INT("port", port, "N", 8000, 1, 65535, "TCP port; HTTP, ws and wss share it"),
    INT_COMPUTED("workers", workers, "N", workers_default, "online cores - 1 (at least 1)", 1, 256,
                 "worker threads"),
    INT("heartbeat-interval", heartbeat_interval, "SECONDS", 30, 1, 3600,
        "seconds between protocol pings"),
    INT("stale-timeout", stale_timeout, "SECONDS", 60, 2, 7200,
        "seconds idle before hang-up; > --heartbeat-interval"),
    INT("queue-size", queue_size, "N", 100, 1, 100000,
        "messages a connection's outbox holds beyond what its socket takes"),
    INT("queue-bytes", queue_bytes, "BYTES", 1 * MIB, 1 * KIB, 1024 * MIB,
        "bytes a connection's outbox holds beyond what its socket takes"),
    INT("max-message-size", max_message_size, "BYTES", 4 * KIB, 64, 16 * MIB,
        "largest client frame accepted, in bytes"),
    INT("max-subscriptions", max_subscriptions, "N", 64, 1, 10000,
        "channels one connection may subscribe to"),
    INT("max-publish-size", max_publish_size, "BYTES", 1 * MIB, 1 * KIB, 64 * MIB,
        "largest publish API request body, in bytes"),
    INT("max-body-memory", max_body_memory, "BYTES", 64 * MIB, 1 * KIB, 1024 * MIB,
        "request bodies held at once by the whole daemon, in bytes; past it, 503"),
    INT("shutdown-timeout", shutdown_timeout, "MS", 3000, 0, 60000,
        "milliseconds allowed at exit to flush outboxes"),
    STRING_FROM_ENV("db", db, "URL", "DATABASE_URL",
                    "PostgreSQL URL or key=value string; without it, no monitors"),
    STRING("redis", redis, "URL", NULL,
           "Redis URL, redis://[:password@]host[:port]: share every message with the other "
           "nodes on it (needs --db)"),
    INT("inbox-retention", inbox_retention, "SECONDS", 7 * DAY, 1, 10 * (365 * DAY),
        "seconds the durable inbox keeps a critical message (and a publish id): then an "
        "unacknowledged one moves to the dead letters, an acknowledged one is deleted"),
    BOOL("load-demo-data", load_demo_data, 0,
         "load demo deals, flights and hotels at start-up, once"),
    INT("demo-activity", demo_activity, "SECONDS", 0, 0, 3600,
        "seconds between simulated market moves on the demo data (a new hot deal, a price under a "
        "demo watch), 0 for none; needs --load-demo-data, never on a production database"),
    INT("hot-deal-interval", hot_deal_interval, "SECONDS", 60, 1, 86400,
        "seconds between hot-deal checks"),
    INT("trending-interval", trending_interval, "SECONDS", 300, 1, 86400,
        "seconds between trending-deal broadcasts"),
    INT("watch-interval", watch_interval, "SECONDS", 30, 1, 86400,
        "seconds between price-watch checks"),
    STRING("tls-cert", tls_cert, "FILE", NULL,
           "PEM certificate (with its chain): serve wss and https only; needs --tls-key"),
    STRING("tls-key", tls_key, "FILE", NULL, "PEM private key of --tls-cert; SIGHUP reloads both"),
    SECRET("jwt-secret", jwt_secret, "SECRET",
           "HS256 key (at least 32 bytes): every WebSocket must present a JWT"),
    STRING("jwt-public-key", jwt_public_key, "FILE", NULL,
           "PEM public key (RSA: RS256, P-256: ES256): every WebSocket must present a JWT"),
    INT("jwt-leeway", jwt_leeway, "SECONDS", 30, 0, 600,
        "clock skew allowed on a token's exp and nbf"),
    SECRET("api-token", api_token, "TOKEN",
           "operator token (at least 16 bytes) the publish and planner APIs require"),
    STRING("allowed-origins", allowed_origins, "LIST", NULL,
           "comma-separated origins (scheme://host[:port]) a browser may connect from; "
           "without it, any origin"),
    STRING("trusted-proxies", trusted_proxies, "LIST", NULL,
           "comma-separated addresses and networks (CIDR) of load balancers and proxies: from "
           "them only, a client's address is read from the PROXY protocol (v1, v2) or "
           "X-Forwarded-For's last address"),
    INT_COMPUTED("max-connections", max_connections, "N", max_connections_default,
                 "open-file limit - 256", 1, 10000000,
                 "WebSocket connections held at once; past it, upgrades get 503"),
    INT("max-connections-per-ip", max_connections_per_ip, "N", 1000, 1, 10000000,
        "sockets (WebSocket and HTTP) one client address may hold"),
    INT("max-connections-per-user", max_connections_per_user, "N", 32, 1, 10000000,
        "WebSocket connections one user may hold; past it, upgrades get 429"),
    INT("handshake-timeout", handshake_timeout, "SECONDS", 10, 1, 300,
        "seconds for each step of a socket that is not a WebSocket: TLS and the request headers, "
        "the body, taking the answer, the next keep-alive request"),
    INT("rate-limit", rate_limit, "N", 20, 1, 1000000,
        "messages per second a client may send, on average"),
    INT("rate-burst", rate_burst, "N", 40, 1, 1000000,
        "messages a client may send at once above --rate-limit"),
    ENUM("event-loop", event_loop, "uv", event_loop_words,
         "event loop under libwebsockets: uv (libuv, epoll) or poll (lws's own, poll(2))"),
    ENUM("log-level", log_level, "info", log_level_words, "most verbose level logged"),
    ENUM("log-format", log_format, "text", log_format_words,
         "how log lines look; json: one JSON object per line (docs/operations.md, Logs)"),
    STRING("config", config_file, "FILE", NULL, "read settings from this key = value file first"),
};

#define N_SETTINGS (sizeof(settings) / sizeof(settings[0]))

/* One worker fewer than cores: the I/O thread is the daemon's busiest and gets a core of its
 * own. Measured on 2 cores (docs/performance.md): --workers 1 beat 2 by 38% in fanout
 * deliveries/s at 10,000 connections and cut paced p99 from 10.2 to 6.9 ms. */
static long long workers_default(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    /* sysconf returns -1 when it cannot tell; one worker still runs the daemon. */
    if (n < 2)
        return 1;
    return n - 1 > 256 ? 256 : n - 1;
}

/* What the open-file limit leaves after what the daemon needs besides connections: its own
 * files, HTTP publishers, the workers' database connections. The daemon raises its soft
 * limit to the hard one at start-up (main.c), so the hard limit is the one that counts. */
static long long max_connections_default(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_max == RLIM_INFINITY)
        return 1000000;
    return rl.rlim_max > 256 + 1 ? (long long)rl.rlim_max - 256 : 1;
}

static const struct setting *find_flag(const char *name, size_t len)
{
    for (size_t i = 0; i < N_SETTINGS; i++) {
        if (strlen(settings[i].flag) == len && memcmp(settings[i].flag, name, len) == 0)
            return &settings[i];
    }
    return NULL;
}

/* Is name[0..len) the environment variable of s: DEALWIRE_ and the flag in upper case, '_' for
 * '-'? */
static bool env_is(const struct setting *s, const char *name, size_t len)
{
    static const char prefix[] = "DEALWIRE_";
    const size_t plen = sizeof(prefix) - 1;

    if (len != plen + strlen(s->flag) || memcmp(name, prefix, plen) != 0)
        return false;
    for (size_t i = 0; i < len - plen; i++) {
        char c = (char)(s->flag[i] == '-' ? '_' : toupper((unsigned char)s->flag[i]));

        if (name[plen + i] != c)
            return false;
    }
    return true;
}

static void put_env(FILE *f, const struct setting *s)
{
    fputs("DEALWIRE_", f);
    for (const char *c = s->flag; *c; c++)
        fputc(*c == '-' ? '_' : toupper((unsigned char)*c), f);
}

static const struct setting *find_env(const char *name, size_t len)
{
    for (size_t i = 0; i < N_SETTINGS; i++) {
        if (env_is(&settings[i], name, len))
            return &settings[i];
    }
    return NULL;
}

/* Finds the setting stored at offset in struct dw_config, for the few with special rules. */
static const struct setting *find_field(size_t offset)
{
    for (size_t i = 0; i < N_SETTINGS; i++) {
        if (settings[i].offset == offset)
            return &settings[i];
    }
    dw_panic("no setting at offset %zu", offset);
}

/* The --config setting: read before the others, and not allowed as a file key. */
static const struct setting *config_key(void)
{
    return find_field(FIELD(config_file));
}

/* ------------------------------------------------------------------------------------------
 * Where a value came from, and how errors say so
 * ------------------------------------------------------------------------------------------ */

/* In increasing precedence: a later source overwrites an earlier one. */
enum rank { FROM_DEFAULT, FROM_FILE, FROM_ENV, FROM_ARGV };

struct origin {
    enum rank rank;
    const char *name;          /* a def_env variable or the file path; borrowed for the load */
    const struct setting *env; /* FROM_ENV: whose environment variable */
    long line;                 /* FROM_FILE only */
};

/* Writes s with quotes, control characters and backslashes escaped, so that an error stays
 * on one line whatever the value holds. */
static void put_escaped(FILE *f, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(f, "\\x%02x", *p);
        else
            fputc(*p, f);
    }
}

static void put_quoted(FILE *f, const char *s)
{
    fputc('"', f);
    put_escaped(f, s);
    fputc('"', f);
}

static void put_origin(FILE *f, const struct origin *o)
{
    switch (o->rank) {
    case FROM_DEFAULT:
        fputs(o->name ? o->name : "the default", f); /* named: a def_env variable */
        break;
    case FROM_FILE:
        put_escaped(f, o->name);
        fprintf(f, ":%ld", o->line);
        break;
    case FROM_ENV:
        put_env(f, o->env);
        break;
    case FROM_ARGV:
        fputs("the command line", f);
        break;
    }
}

/* What a setting accepts, as --help, the docs and error messages say it. */
static void put_accepted(FILE *f, const struct setting *s)
{
    switch (s->kind) {
    case KIND_INT:
        fprintf(f, "%lld..%lld", s->min, s->max);
        break;
    case KIND_ENUM:
        fputs("one of:", f);
        for (size_t i = 0; s->words[i]; i++)
            fprintf(f, "%s %s", i ? "," : "", s->words[i]);
        break;
    case KIND_STRING:
        fputs("a non-empty string", f);
        break;
    case KIND_BOOL:
        fputs("true or false", f);
        break;
    }
}

static void put_expected(FILE *f, const struct setting *s)
{
    fputs(s->kind == KIND_INT ? "expected an integer in " : "expected ", f);
    put_accepted(f, s);
}

/* "dealwire: invalid value "V" for --FLAG (from SOURCE): ", the reason left to the caller. */
static void put_invalid(FILE *err, const struct setting *s, const char *value,
                        const struct origin *o)
{
    fputs("dealwire: invalid value ", err);
    if (s->secret)
        fputs("(hidden)", err);
    else
        put_quoted(err, value);
    fprintf(err, " for --%s (from ", s->flag);
    put_origin(err, o);
    fputs("): ", err);
}

static void report_value(FILE *err, const struct setting *s, const char *value,
                         const struct origin *o)
{
    put_invalid(err, s, value, o);
    put_expected(err, s);
    fputc('\n', err);
}

static void report_missing(FILE *err, const struct setting *s, const struct origin *o)
{
    fprintf(err, "dealwire: missing value for --%s (from ", s->flag);
    put_origin(err, o);
    fputs("): ", err);
    put_expected(err, s);
    fputc('\n', err);
}

/* ------------------------------------------------------------------------------------------
 * Storing one value
 * ------------------------------------------------------------------------------------------ */

struct loader {
    struct dw_config *cfg;
    FILE *err;
    struct origin origins[N_SETTINGS]; /* where each setting's current value came from */
};

/* Accepts what strtoll reads in full, in range, with no leading space and nothing after. */
static int parse_int(const char *text, long long min, long long max, long long *out)
{
    char *end;
    long long v;

    if (*text == '\0' || isspace((unsigned char)*text))
        return -EINVAL;
    errno = 0;
    v = strtoll(text, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

static void store_int(struct dw_config *cfg, const struct setting *s, long long v)
{
    *(int *)((char *)cfg + s->offset) = (int)v;
}

static void store_bool(struct dw_config *cfg, const struct setting *s, bool v)
{
    *(bool *)((char *)cfg + s->offset) = v;
}

/* The index of text in words (NULL-terminated), or -EINVAL. */
static int word_index(const char *const *words, const char *text)
{
    for (int i = 0; words[i]; i++) {
        if (strcmp(text, words[i]) == 0)
            return i;
    }
    return -EINVAL;
}

static void store_string(struct dw_config *cfg, const struct setting *s, const char *v)
{
    char **field = (char **)((char *)cfg + s->offset);

    free(*field);
    *field = v ? dw_xstrdup(v) : NULL;
}

/* Parses text for s and stores it, or reports it on err and returns -EINVAL with cfg as it
 * was. */
static int set_value(struct loader *ld, const struct setting *s, const char *text,
                     const struct origin *o)
{
    long long v;
    int word;

    switch (s->kind) {
    case KIND_INT:
        if (parse_int(text, s->min, s->max, &v) < 0)
            goto bad;
        store_int(ld->cfg, s, v);
        break;
    case KIND_ENUM:
        word = word_index(s->words, text);
        if (word < 0)
            goto bad;
        store_int(ld->cfg, s, word);
        break;
    case KIND_STRING:
        if (*text == '\0')
            goto bad;
        store_string(ld->cfg, s, text);
        break;
    case KIND_BOOL:
        word = word_index(bool_words, text);
        if (word < 0)
            goto bad;
        store_bool(ld->cfg, s, word % 2 == 0);
        break;
    }
    ld->origins[s - settings] = *o;
    return 0;

bad:
    report_value(ld->err, s, text, o);
    return -EINVAL;
}

static void set_defaults(struct loader *ld)
{
    const struct origin o = {.rank = FROM_DEFAULT};

    for (size_t i = 0; i < N_SETTINGS; i++) {
        const struct setting *s = &settings[i];
        int r = 0;

        if (s->kind == KIND_INT)
            store_int(ld->cfg, s, s->def_fn ? s->def_fn() : s->def_int);
        else if (s->kind == KIND_BOOL)
            store_bool(ld->cfg, s, s->def_int != 0);
        else if (s->def_str)
            r = set_value(ld, s, s->def_str, &o);
        if (r < 0)
            dw_panic("default of --%s does not parse", s->flag);
        ld->origins[i] = o;
    }
}

/* ------------------------------------------------------------------------------------------
 * Sources: command line, environment, file
 * ------------------------------------------------------------------------------------------ */

/* Reads the setting at argv[*i] ("--flag value" or "--flag=value", and for a boolean "--flag"
 * alone) and moves *i to its last word. A following word that starts with "--" is taken as
 * the next flag, not as a value. Returns 0, or -EINVAL after one line on err. */
static int next_arg(int argc, char **argv, int *i, const struct setting **out_s,
                    const char **out_value, FILE *err)
{
    const struct origin argv_origin = {.rank = FROM_ARGV};
    const char *arg = argv[*i];
    const struct setting *s;
    const char *eq;

    if (strncmp(arg, "--", 2) != 0) {
        fputs("dealwire: unexpected argument ", err);
        put_quoted(err, arg);
        fputs(" (from the command line): expected --flag VALUE or --flag=VALUE\n", err);
        return -EINVAL;
    }
    eq = strchr(arg + 2, '=');
    s = find_flag(arg + 2, eq ? (size_t)(eq - (arg + 2)) : strlen(arg + 2));
    if (!s) {
        fputs("dealwire: unknown flag ", err);
        put_quoted(err, arg);
        fputs(" (from the command line): see dealwire --help for the settings\n", err);
        return -EINVAL;
    }
    if (eq) {
        *out_value = eq + 1;
    } else if (s->kind == KIND_BOOL) {
        *out_value = "true"; /* a bare boolean flag never takes the next word */
    } else if (*i + 1 < argc && strncmp(argv[*i + 1], "--", 2) != 0) {
        *out_value = argv[++*i];
    } else {
        report_missing(err, s, &argv_origin);
        return -EINVAL;
    }
    *out_s = s;
    return 0;
}

/* Checks the syntax of the whole command line and finds the last --config, without storing
 * anything: the command line is applied last, but the file it names is read first. */
static int scan_argv(struct loader *ld, int argc, char **argv, const char **config_path)
{
    for (int i = 1; i < argc; i++) {
        const struct setting *s;
        const char *value;

        if (next_arg(argc, argv, &i, &s, &value, ld->err) < 0)
            return -EINVAL;
        if (s == config_key())
            *config_path = value;
    }
    return 0;
}

static int apply_argv(struct loader *ld, int argc, char **argv)
{
    const struct origin o = {.rank = FROM_ARGV};

    for (int i = 1; i < argc; i++) {
        const struct setting *s;
        const char *value;

        if (next_arg(argc, argv, &i, &s, &value, ld->err) < 0)
            return -EINVAL;
        if (set_value(ld, s, value, &o) < 0)
            return -EINVAL;
    }
    return 0;
}

/* Finds the setting named by an environment entry "DEALWIRE_X=value"; NULL for any other
 * entry, including DEALWIRE_* names that are not settings (they are ignored). */
static const struct setting *env_setting(const char *entry, const char **value)
{
    const char *eq = strchr(entry, '=');
    const struct setting *s;

    *value = NULL;
    if (!eq || strncmp(entry, "DEALWIRE_", 9) != 0)
        return NULL;
    s = find_env(entry, (size_t)(eq - entry));
    if (s)
        *value = eq + 1;
    return s;
}

static int apply_env(struct loader *ld, char **envp)
{
    for (size_t i = 0; envp && envp[i]; i++) {
        const char *value;
        const struct setting *s = env_setting(envp[i], &value);
        struct origin o = {.rank = FROM_ENV};

        if (!s)
            continue;
        o.env = s;
        if (set_value(ld, s, value, &o) < 0)
            return -EINVAL;
    }
    return 0;
}

/* Defaults taken from another program's environment variable (--db from DATABASE_URL). An
 * empty one counts as unset. They are defaults: the file, DEALWIRE_* and argv override them. */
static int apply_default_env(struct loader *ld, char **envp)
{
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const struct setting *s = &settings[i];
        size_t len = s->def_env ? strlen(s->def_env) : 0;

        for (size_t j = 0; len && envp && envp[j]; j++) {
            const struct origin o = {.rank = FROM_DEFAULT, .name = s->def_env};

            if (strncmp(envp[j], s->def_env, len) != 0 || envp[j][len] != '=' ||
                envp[j][len + 1] == '\0')
                continue;
            if (set_value(ld, s, envp[j] + len + 1, &o) < 0)
                return -EINVAL;
        }
    }
    return 0;
}

static char *trim(char *s)
{
    char *end;

    while (isspace((unsigned char)*s))
        s++;
    end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1]))
        end--;
    *end = '\0';
    return s;
}

/* Applies one line of a config file: blank, "# comment" or "key = value", where value may be
 * wrapped in matching single or double quotes. */
static int apply_line(struct loader *ld, char *line, const struct origin *o)
{
    char *key, *value, *eq;
    const struct setting *s;
    size_t len;

    key = trim(line);
    if (*key == '\0' || *key == '#')
        return 0;

    eq = strchr(key, '=');
    if (eq)
        *eq = '\0';
    key = trim(key);
    s = find_flag(key, strlen(key));
    if (!s || s == config_key()) {
        fputs(s ? "dealwire: invalid key " : "dealwire: unknown key ", ld->err);
        put_quoted(ld->err, key);
        if (eq) {
            fputs(" = ", ld->err);
            put_quoted(ld->err, trim(eq + 1));
        }
        fputs(" (from ", ld->err);
        put_origin(ld->err, o);
        fputs(s ? "): a config file cannot name another config file\n"
                : "): expected a flag name without the dashes, see dealwire --help\n",
              ld->err);
        return -EINVAL;
    }
    if (!eq) {
        report_missing(ld->err, s, o);
        return -EINVAL;
    }

    value = trim(eq + 1);
    len = strlen(value);
    if (len >= 2 && (value[0] == '"' || value[0] == '\'') && value[len - 1] == value[0]) {
        value[len - 1] = '\0';
        value++;
    }
    return set_value(ld, s, value, o);
}

/* Reads the config file at path, named by the --config setting from source. */
static int apply_file(struct loader *ld, const char *path, const struct origin *source)
{
    struct origin o = {.rank = FROM_FILE, .name = path};
    char *line = NULL;
    size_t cap = 0;
    int r = 0;
    FILE *f;

    f = fopen(path, "r");
    if (!f)
        goto fail_read;

    while (getline(&line, &cap, f) >= 0) {
        o.line++;
        r = apply_line(ld, line, &o);
        if (r < 0)
            goto out;
    }
    /* getline fails the same way at end of file and on a read error (EISDIR, EIO). */
    if (ferror(f))
        goto fail_read;

out:
    free(line);
    if (f)
        fclose(f);
    return r;

fail_read:
    r = errno; /* before the writes below can change it */
    fputs("dealwire: cannot read ", ld->err);
    put_quoted(ld->err, path);
    fprintf(ld->err, " for --%s (from ", config_key()->flag);
    put_origin(ld->err, source);
    fprintf(ld->err, "): %s\n", strerror(r));
    r = -EINVAL;
    goto out;
}

/* Finds the file to read first: the last --config on the command line, else DEALWIRE_CONFIG.
 * The path is stored (and checked) like any other value; later sources store it again. */
static int load_config_file(struct loader *ld, const char *argv_path, char **envp)
{
    struct origin o = {.rank = FROM_ARGV};
    const char *path = argv_path;

    for (size_t i = 0; !path && envp && envp[i]; i++) {
        const char *value;

        if (env_setting(envp[i], &value) == config_key()) {
            path = value;
            o = (struct origin){.rank = FROM_ENV, .env = config_key()};
        }
    }
    if (!path)
        return 0;
    if (set_value(ld, config_key(), path, &o) < 0)
        return -EINVAL;
    return apply_file(ld, path, &o);
}

/* The next entry of a comma-separated list at *p, spaces trimmed: [*start, *end). Advances
 * *p past it; returns false once the list is used up. */
static bool next_entry(const char **p, const char **start, const char **end)
{
    size_t n;

    if (!*p)
        return false;
    n = strcspn(*p, ",");
    *start = *p;
    *end = *p + n;
    while (*start < *end && **start == ' ')
        (*start)++;
    while (*end > *start && (*end)[-1] == ' ')
        (*end)--;
    *p = (*p)[n] ? *p + n + 1 : NULL;
    return true;
}

/* Is [s, e) an origin as browsers send it: http:// or https:// and a host[:port], no path, no
 * trailing slash? */
static bool origin_valid(const char *s, const char *e)
{
    const char *host;

    if (strncmp(s, "https://", 8) == 0)
        host = s + 8;
    else if (strncmp(s, "http://", 7) == 0)
        host = s + 7;
    else
        return false;
    if (host >= e)
        return false;
    for (const char *c = host; c < e; c++) {
        if (!isalnum((unsigned char)*c) && !strchr("-.:[]", *c))
            return false;
    }
    return true;
}

/* Splits --allowed-origins into cfg->origins, or returns -EINVAL (cfg->origins then holds
 * what was split so far, freed with the config). */
static int split_origins(struct dw_config *cfg)
{
    const char *p = cfg->allowed_origins, *s, *e;
    size_t n = 0;

    cfg->origins = dw_xcalloc(1, sizeof(*cfg->origins));
    while (next_entry(&p, &s, &e)) {
        if (!origin_valid(s, e))
            return -EINVAL;
        cfg->origins = dw_xrealloc(cfg->origins, (n + 2) * sizeof(*cfg->origins));
        cfg->origins[n++] = dw_xstrndup(s, (size_t)(e - s));
        cfg->origins[n] = NULL;
    }
    return 0;
}

/* Parses --trusted-proxies into cfg->trusted, or returns -EINVAL with why filled. */
static int split_trusted(struct dw_config *cfg, char *why, size_t size)
{
    cfg->trusted = dw_xcalloc(DW_TRUSTED_MAX, sizeof(*cfg->trusted));
    return dw_trusted_parse(cfg->trusted_proxies, cfg->trusted, &cfg->ntrusted, why, size);
}

/* "dealwire: invalid value V for --FLAG (from SOURCE): why" for a value the table accepts but a
 * check below does not. */
static int report_check(struct loader *ld, size_t field, const char *why)
{
    const struct setting *s = find_field(field);

    put_invalid(ld->err, s, *(char *const *)((const char *)ld->cfg + field),
                &ld->origins[s - settings]);
    fprintf(ld->err, "%s\n", why);
    return -EINVAL;
}

/* "dealwire: --A (from SOURCE) <relation> --B". */
static int report_relation(struct loader *ld, size_t a, const char *relation, size_t b)
{
    const struct setting *sa = find_field(a), *sb = find_field(b);

    fprintf(ld->err, "dealwire: --%s (from ", sa->flag);
    put_origin(ld->err, &ld->origins[sa - settings]);
    fprintf(ld->err, ") %s --%s\n", relation, sb->flag);
    return -EINVAL;
}

/* Checks of single values the table cannot express. */
static int check_values(struct loader *ld)
{
    struct dw_config *cfg = ld->cfg;
    char why[160];

    if (cfg->jwt_secret && strlen(cfg->jwt_secret) < 32)
        return report_check(ld, FIELD(jwt_secret),
                            "expected at least 32 bytes (RFC 7518: the key must be as long as "
                            "the HMAC-SHA-256 output)");
    if (cfg->api_token && strlen(cfg->api_token) < 16)
        return report_check(ld, FIELD(api_token), "expected at least 16 bytes");
    if (cfg->allowed_origins && split_origins(cfg) < 0)
        return report_check(ld, FIELD(allowed_origins),
                            "expected a comma-separated list of scheme://host[:port] "
                            "(http or https, no path, no trailing slash)");
    if (cfg->trusted_proxies && split_trusted(cfg, why, sizeof(why)) < 0)
        return report_check(ld, FIELD(trusted_proxies), why);
    if (cfg->tls_cert && !cfg->tls_key)
        return report_relation(ld, FIELD(tls_cert), "needs", FIELD(tls_key));
    if (cfg->tls_key && !cfg->tls_cert)
        return report_relation(ld, FIELD(tls_key), "needs", FIELD(tls_cert));
    if (cfg->jwt_secret && cfg->jwt_public_key)
        return report_relation(ld, FIELD(jwt_secret), "cannot be combined with",
                               FIELD(jwt_public_key));
    /* The simulator changes deals: only ever in a database that holds the demo data. */
    if (cfg->demo_activity > 0 && !cfg->load_demo_data)
        return report_relation(ld, FIELD(demo_activity), "needs", FIELD(load_demo_data));
    if (cfg->demo_activity > 0 && !cfg->db)
        return report_relation(ld, FIELD(demo_activity), "needs", FIELD(db));
    if (cfg->redis && strncmp(cfg->redis, "redis://", 8) != 0)
        return report_check(ld, FIELD(redis), "expected redis://[:password@]host[:port]");
    /* The nodes share one database: the inbox, the monitors' leader. */
    if (cfg->redis && !cfg->db)
        return report_relation(ld, FIELD(redis), "needs", FIELD(db));
    if (cfg->max_body_memory < cfg->max_publish_size)
        return report_relation(ld, FIELD(max_body_memory), "must be at least",
                               FIELD(max_publish_size));
    return 0;
}

/* Settings that are valid alone but not together. The error names whichever of the pair came
 * from the stronger source, since that is the one the operator just changed. */
static int check_pairs(struct loader *ld)
{
    const struct setting *hb = find_field(FIELD(heartbeat_interval));
    const struct setting *st = find_field(FIELD(stale_timeout));
    const struct origin *hb_o = &ld->origins[hb - settings];
    const struct origin *st_o = &ld->origins[st - settings];
    struct dw_config *cfg = ld->cfg;
    FILE *err = ld->err;

    if (cfg->stale_timeout > cfg->heartbeat_interval)
        return 0;
    if (hb_o->rank > st_o->rank) {
        fprintf(err, "dealwire: invalid value \"%d\" for --%s (from ", cfg->heartbeat_interval,
                hb->flag);
        put_origin(err, hb_o);
        fprintf(err, "): expected less than --%s (%d, from ", st->flag, cfg->stale_timeout);
        put_origin(err, st_o);
    } else {
        fprintf(err, "dealwire: invalid value \"%d\" for --%s (from ", cfg->stale_timeout,
                st->flag);
        put_origin(err, st_o);
        fprintf(err, "): expected more than --%s (%d, from ", hb->flag, cfg->heartbeat_interval);
        put_origin(err, hb_o);
    }
    fputs(")\n", err);
    return -EINVAL;
}

/* ------------------------------------------------------------------------------------------
 * --help, --version and the Markdown table
 * ------------------------------------------------------------------------------------------ */

static void put_default(FILE *f, const struct setting *s, bool markdown)
{
    const char *tick = markdown ? "`" : "";

    if (s->def_doc)
        fputs(s->def_doc, f);
    else if (s->kind == KIND_INT)
        fprintf(f, "%s%lld%s", tick, s->def_int, tick);
    else if (s->kind == KIND_BOOL)
        fprintf(f, "%s%s%s", tick, s->def_int ? "true" : "false", tick);
    else
        fprintf(f, "%s%s%s", tick, s->def_str, tick);
}

/* The help text and what the setting accepts; --help leaves out an enum's words, since its
 * usage column shows them already. */
static void put_meaning(FILE *f, const struct setting *s, bool markdown)
{
    fputs(s->help, f);
    if (s->kind == KIND_INT || s->kind == KIND_BOOL || (s->kind == KIND_ENUM && markdown)) {
        fputs(" (", f);
        put_accepted(f, s);
        fputc(')', f);
    }
}

/* Writes "--flag META" into buf, with an enum's words as its META ("--event-loop poll|uv"),
 * and a boolean as "--flag" alone. Returns the length. */
static int format_usage(char *buf, size_t size, const struct setting *s)
{
    int n;

    if (s->kind == KIND_BOOL)
        return snprintf(buf, size, "--%s", s->flag);
    n = snprintf(buf, size, "--%s %s", s->flag, s->kind == KIND_ENUM ? "" : s->meta);

    for (size_t i = 0; s->kind == KIND_ENUM && s->words[i]; i++)
        n += snprintf(buf + n, size - (size_t)n, "%s%s", i ? "|" : "", s->words[i]);
    return n;
}

static void write_help(FILE *out)
{
    char usage[N_SETTINGS][80];
    int width = (int)strlen("--version");

    for (size_t i = 0; i < N_SETTINGS; i++) {
        int w = format_usage(usage[i], sizeof(usage[i]), &settings[i]);
        width = w > width ? w : width;
    }

    fputs("usage: dealwire [--FLAG VALUE | --FLAG=VALUE]...\n"
          "\n"
          "Each setting comes from, in increasing precedence: its default, the --config file\n"
          "(key = value lines, keys are the flags without dashes), its DEALWIRE_* environment\n"
          "variable, the command line. A bad value exits with status 2.\n"
          "\n",
          out);
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const struct setting *s = &settings[i];

        fprintf(out, "  %-*s  ", width, usage[i]);
        put_meaning(out, s, false);
        fprintf(out, "\n  %*s  default ", width, "");
        put_default(out, s, false);
        fputs(", env ", out);
        put_env(out, s);
        fputc('\n', out);
    }
    fprintf(out, "  %-*s  print this help and exit\n", width, "--help");
    fprintf(out, "  %-*s  print the version and exit\n", width, "--version");
}

void dw_config_write_markdown(FILE *out)
{
    fputs("| flag | env | default | meaning |\n"
          "| --- | --- | --- | --- |\n",
          out);
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const struct setting *s = &settings[i];

        fprintf(out, "| `--%s` | `", s->flag);
        put_env(out, s);
        fputs("` | ", out);
        put_default(out, s, true);
        fputs(" | ", out);
        put_meaning(out, s, true);
        fputs(" |\n", out);
    }
}

/* ------------------------------------------------------------------------------------------
 * Load and destroy
 * ------------------------------------------------------------------------------------------ */

int dw_config_load(struct dw_config *cfg, int argc, char **argv, char **envp, FILE *out, FILE *err)
{
    struct loader ld = {.cfg = cfg, .err = err};
    const char *config_path = NULL;

    if (!cfg || argc < 0 || (argc > 0 && !argv) || !out || !err)
        return -EINVAL;
    memset(cfg, 0, sizeof(*cfg));

    /* --help and --version win over anything else on the line, even a bad value, since a
     * user who asks for help may well be fixing one. */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0) {
            write_help(out);
            return DW_CONFIG_EXIT_OK;
        }
        if (strcmp(argv[i], "--version") == 0) {
            fprintf(out, "dealwire " DW_VERSION "\nlibwebsockets %s (%s)\n",
                    lws_get_library_version(), DW_LWS_BUILD);
            return DW_CONFIG_EXIT_OK;
        }
    }

    set_defaults(&ld);
    if (apply_default_env(&ld, envp) < 0)
        goto fail;
    if (scan_argv(&ld, argc, argv, &config_path) < 0)
        goto fail;
    if (load_config_file(&ld, config_path, envp) < 0)
        goto fail;
    if (apply_env(&ld, envp) < 0)
        goto fail;
    if (apply_argv(&ld, argc, argv) < 0)
        goto fail;
    if (check_pairs(&ld) < 0 || check_values(&ld) < 0)
        goto fail;
    return 0;

fail:
    fflush(err);
    dw_config_destroy(cfg);
    memset(cfg, 0, sizeof(*cfg));
    return DW_CONFIG_EXIT_BAD;
}

void dw_config_destroy(struct dw_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < N_SETTINGS; i++) {
        if (settings[i].kind == KIND_STRING)
            store_string(cfg, &settings[i], NULL);
    }
    for (size_t i = 0; cfg->origins && cfg->origins[i]; i++)
        free(cfg->origins[i]);
    free(cfg->origins);
    cfg->origins = NULL;
    free(cfg->trusted);
    cfg->trusted = NULL;
    cfg->ntrusted = 0;
}
