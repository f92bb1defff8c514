/*
 * config — every setting of the daemon, from flags, DEALWIRE_* environment variables and an
 * optional `key = value` file (flags win over env, env over file).
 *
 * One table in config.c lists each setting: flag, type, default, bounds and help; the env name
 * is DEALWIRE_ and the flag in upper case, '_' for '-'.
 * The parser, --help and docs/configuration.md all come from it. The loaded config is
 * immutable after dw_config_load() and is passed by pointer.
 */
#ifndef DEALWIRE_CONFIG_H
#define DEALWIRE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct dw_cidr;

enum dw_event_loop {
    DW_EVENT_LOOP_POLL = 0,
    DW_EVENT_LOOP_UV = 1,
};

struct dw_config {
    char *host;                 /* --host, default "0.0.0.0" */
    int port;                   /* --port, default 8000, 1..65535 */
    int workers;                /* --workers, default: online cores - 1 (>= 1), 1..256 */
    int heartbeat_interval;     /* --heartbeat-interval, seconds, default 30, 1..3600 */
    int stale_timeout;          /* --stale-timeout, seconds, default 60, 2..7200, > heartbeat */
    int queue_size;             /* --queue-size, per-connection outbox bound, default 100 */
    int queue_bytes;            /* --queue-bytes, the same in bytes, default 1 MiB */
    int max_message_size;       /* --max-message-size, bytes, default 4096, 64..16 MiB */
    int max_subscriptions;      /* --max-subscriptions, per connection, default 64, 1..10000 */
    int max_publish_size;       /* --max-publish-size, HTTP body bytes, default 1 MiB */
    int max_body_memory;        /* --max-body-memory, bodies held at once, default 64 MiB */
    int shutdown_timeout;       /* --shutdown-timeout, ms to flush outboxes at exit, default 3000 */
    char *db;                   /* --db, libpq connection string; default $DATABASE_URL, or NULL */
    char *redis;                /* --redis, redis://... URL of the nodes' bus, or NULL */
    int inbox_retention;        /* --inbox-retention, seconds, default 604800, 1..10 years */
    bool load_demo_data;        /* --load-demo-data, default false */
    int demo_activity;          /* --demo-activity, seconds, default 0 (off), 0..3600 */
    int hot_deal_interval;      /* --hot-deal-interval, seconds, default 60, 1..86400 */
    int trending_interval;      /* --trending-interval, seconds, default 300, 1..86400 */
    int watch_interval;         /* --watch-interval, seconds, default 30, 1..86400 */
    char *tls_cert;             /* --tls-cert FILE: wss/https only; NULL: plain ws/http */
    char *tls_key;              /* --tls-key FILE, set exactly when tls_cert is */
    char *jwt_secret;           /* --jwt-secret (HS256), or NULL */
    char *jwt_public_key;       /* --jwt-public-key FILE (RS256/ES256), or NULL; not both */
    int jwt_leeway;             /* --jwt-leeway, seconds, default 30, 0..600 */
    char *api_token;            /* --api-token for the publish and planner APIs, or NULL */
    char *allowed_origins;      /* --allowed-origins, comma list, or NULL (any origin) */
    char *trusted_proxies;      /* --trusted-proxies, comma list of addresses/CIDRs, or NULL */
    int max_connections;        /* --max-connections, default: open-file limit - 256 */
    int max_connections_per_ip; /* --max-connections-per-ip, sockets, default 1000 */
    int max_connections_per_user;  /* --max-connections-per-user, default 32 */
    int handshake_timeout;         /* --handshake-timeout, seconds, default 10, 1..300 */
    int rate_limit;                /* --rate-limit, client messages/s, default 20 */
    int rate_burst;                /* --rate-burst, default 40 */
    enum dw_event_loop event_loop; /* --event-loop poll|uv */
    int log_level;                 /* --log-level error|warn|info|debug (enum dw_log_level) */
    int log_format;                /* --log-format text|json (enum dw_log_format) */
    char *config_file;             /* --config FILE, NULL when none */

    /* Derived at load time. */
    char **origins; /* --allowed-origins split and checked, NULL-terminated; NULL: any origin */
    struct dw_cidr *trusted; /* --trusted-proxies parsed: ntrusted entries (proxy.h) */
    size_t ntrusted;
};

/* Results of dw_config_load() other than 0. */
#define DW_CONFIG_EXIT_OK  1 /* --help or --version was printed: exit 0 */
#define DW_CONFIG_EXIT_BAD 2 /* a bad value was reported on err: exit 2 */

/* thread: main. Fills cfg from defaults, then the file named by --config or DEALWIRE_CONFIG,
 * then the environment (envp, NULL-terminated), then argv. Returns 0 when the daemon should
 * run, DW_CONFIG_EXIT_OK after printing --help/--version on out, or DW_CONFIG_EXIT_BAD after
 * printing one line on err naming the flag, the value and its source (file:line, env or
 * command line). cfg owns its strings afterwards; release them with dw_config_destroy().
 * After any nonzero return cfg is all zero, so destroying it is optional. Returns -EINVAL,
 * printing nothing, if cfg, out or err is NULL, argc < 0, or argv is NULL with argc > 0. */
int dw_config_load(struct dw_config *cfg, int argc, char **argv, char **envp, FILE *out, FILE *err);

/* thread: any. Frees the strings and lists cfg owns; cfg itself is the caller's storage. */
void dw_config_destroy(struct dw_config *cfg);

/* thread: any. Writes the settings table as Markdown (flag, env, default, meaning) to out; the
 * source of docs/configuration.md's table. */
void dw_config_write_markdown(FILE *out);

#endif
