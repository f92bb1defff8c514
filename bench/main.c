/*
 * dealwire-bench — DESIGN: a load generator for dealwire on one thread and one epoll loop.
 *
 * A run goes through phases, each bounded in time: SETUP (replay only: the messages to replay
 * are stored, untimed, before any connection), CONNECT (bounded parallel waves, each
 * attempt with --connect-timeout), SUBSCRIBE (channels), SETTLE (idle), PUBLISH (until
 * --duration or --messages), DRAIN (until everything published arrived, or --drain-timeout
 * without a delivery), CLOSE (close handshakes, at most CLOSE_WAIT_S). --timeout bounds the
 * whole run: when it passes, the run goes to CLOSE and is reported INCOMPLETE.
 *
 * Only loopback addresses are used: the daemon's (--host must be in 127.0.0.0/8) and the
 * source addresses 127.0.0.1 .. 127.0.0.<sources>.
 *
 * --server nchan points the same run at nginx + nchan (bench/nchan.conf) instead, for
 * bench/compare: see bench.h and bench/README.md for what changes. --tls runs every
 * connection over TLS (wss, https; net.c), verified against --tls-ca unless --tls-insecure.
 * --ports spreads the clients over several dealwire nodes sharing messages over Redis
 * (bench/cluster), and --publish-port names the one the publishers post to. --publish-mode
 * picks the publishers' shape (http.c): one HTTP request in flight each, up to --in-flight
 * pipelined requests, or up to --in-flight frames on a publish WebSocket. --channel sends
 * fanout's and paced's messages to one channel the clients join, instead of to everyone, and
 * --marks lets another process mark a span of the run with SIGUSR1 (its latencies apart).
 */
#include "bench.h"
#include "http.h"
#include "net.h"
#include "ws.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS       1024
#define CLOSE_WAIT_S     2.0
#define PORTS_PER_SOURCE 5000 /* default --sources keeps each address well under 25,000 */
#define EXIT_USAGE       2

static volatile sig_atomic_t stop_signal;
static volatile sig_atomic_t mark_signals; /* --marks: SIGUSR1s received */

int64_t dwb_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void dwb_note_error(struct dwb_run *run, const char *fmt, ...)
{
    va_list ap;

    if (run->first_error[0])
        return;
    va_start(ap, fmt);
    vsnprintf(run->first_error, sizeof(run->first_error), fmt, ap);
    va_end(ap);
}

static void on_signal(int sig)
{
    stop_signal = sig;
}

static void on_mark(int sig)
{
    (void)sig;
    mark_signals++; /* only this handler writes it, and SIGUSR1 is blocked while it runs */
}

/* ---- options --------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: " DWB_NAME " [options]\n"
            "Load generator for dealwire: WebSocket clients on /ws/events, publishers on\n"
            "POST /api/publish. Loopback only. Exit 0 when the run is COMPLETE, 1 when it is\n"
            "not, 2 on bad options.\n\n"
            "  --server NAME          dealwire|nchan: nchan is nginx + nchan as configured by\n"
            "                         bench/nchan.conf, /sub/<channel> and POST /pub/<channel>\n"
            "                         (dealwire)\n"
            "  --host ADDR            daemon address in 127.0.0.0/8 (127.0.0.1)\n"
            "  --port N               daemon port (8000)\n"
            "  --ports P1,P2,...      several daemon ports on --host, nodes sharing messages\n"
            "                         over Redis (dealwire --redis): the clients are spread\n"
            "                         over them round-robin; not with --port\n"
            "  --publish-port P       the port the publishers post to (the first of --ports);\n"
            "                         its answers count only that node's recipients\n"
            "  --tls                  every connection over TLS: wss:// clients, https://\n"
            "                         publishers; needs --tls-ca or --tls-insecure\n"
            "  --tls-ca FILE          PEM certificates to verify the server's against\n"
            "  --tls-insecure         do not verify the server's certificate\n"
            "  --tls-server-name NAME SNI, and the name the certificate must match (localhost)\n"
            "  --tls-resume           resume the last TLS session the server gave (tickets);\n"
            "                         without it every handshake is a full one\n"
            "  --scenario NAME        fanout|targeted|channels|paced|idle|connect|replay\n"
            "                         (fanout)\n"
            "  --connections N        WebSocket clients (100)\n"
            "  --sources K            source addresses 127.0.0.1..127.0.0.K (N/5000 rounded up)\n"
            "  --parallel N           connection attempts in flight (500)\n"
            "  --connect-timeout S    per connection, connect + handshake (10)\n"
            "  --publishers P         publisher connections, each one ordered producer (16)\n"
            "  --publish-mode MODE    http|pipeline|ws: how each publisher sends: keep-alive\n"
            "                         HTTP, 1 request in flight; HTTP pipelined, --in-flight\n"
            "                         requests sent back to back; or a WebSocket (dealwire:\n"
            "                         /ws/publish; nchan: /pub/all or /pub/<channel>),\n"
            "                         --in-flight frames outstanding (http)\n"
            "  --in-flight D          pipeline, ws: requests outstanding per publisher (16)\n"
            "  --api-token TOKEN      Authorization: Bearer TOKEN on every publish request and\n"
            "                         publish socket (the daemon's --api-token)\n"
            "  --batch B              messages per publish request, a JSON array if > 1 (1;\n"
            "                         replay: 100)\n"
            "  --msg-size BYTES       size of one delivered message (300)\n"
            "  --window W             messages outstanding per client (64 up to 1000 clients,\n"
            "                         16 above)\n"
            "  --duration S           seconds of publishing (10; 0 with --messages)\n"
            "  --messages M           messages to publish (no bound)\n"
            "  --rate R               paced: messages per second (1000)\n"
            "  --channel NAME         fanout, paced: every client joins channel NAME (dealwire:\n"
            "                         a subscribe command; nchan: /sub/NAME) and the messages\n"
            "                         go to it instead of to everyone (all)\n"
            "  --marks                fanout, targeted, channels, paced: SIGUSR1 opens a span,\n"
            "                         a second one closes it; the latency of the messages\n"
            "                         published inside it is reported apart (marked_*)\n"
            "  --channels M           channels: number of channels (100)\n"
            "  --subs-per-conn S      channels: subscriptions per connection (4)\n"
            "  --users U              targeted: draw each message's user from U user ids, of\n"
            "                         which the first N are connected (default N); the rest\n"
            "                         have no connection, so the server must deliver nothing\n"
            "  --backlog M            replay: critical messages stored per user before the\n"
            "                         connections open, the history each one replays (100)\n"
            "  --last-seq K           replay: every connection resumes with ?last_seq=K (0)\n"
            "  --server-pid PID[,PID] idle: the daemon's pid, for its RSS (nchan: the nginx\n"
            "                         workers' pids; their RSS is summed); replay: the CPU\n"
            "                         time of each during the set-up and the replay; fanout,\n"
            "                         targeted, channels, paced: during publishing (up to 8)\n"
            "  --settle S             idle: seconds between the last connect and the RSS (2)\n"
            "  --drain-timeout S      seconds without a delivery before the drain gives up (10)\n"
            "  --timeout S            hard bound on the whole run (120)\n"
            "  --user-prefix STR      user ids are STR<i> (bench-u; replay: a new one per run,\n"
            "                         bench-r<unix time>-<pid>-u)\n"
            "  --seed N               random seed (from the clock)\n"
            "  --quiet                no progress lines on stderr\n"
            "  --help                 this text\n");
}

static int bad(const char *flag, const char *value, const char *why)
{
    fprintf(stderr, DWB_NAME ": bad %s '%s': %s\n", flag, value, why);
    return -EINVAL;
}

static int parse_uint(const char *flag, const char *v, unsigned long long lo, unsigned long long hi,
                      unsigned long long *out)
{
    char *end;

    errno = 0;
    *out = strtoull(v, &end, 10);
    if (errno || end == v || *end || v[0] == '-' || *out < lo || *out > hi) {
        char why[96];

        snprintf(why, sizeof(why), "expected an integer in %llu..%llu", lo, hi);
        return bad(flag, v, why);
    }
    return 0;
}

static int parse_num(const char *flag, const char *v, double lo, double hi, double *out)
{
    char *end;

    *out = strtod(v, &end);
    if (end == v || *end || !isfinite(*out) || *out < lo || *out > hi) {
        char why[96];

        snprintf(why, sizeof(why), "expected a number in %g..%g", lo, hi);
        return bad(flag, v, why);
    }
    return 0;
}

enum {
    OPT_HOST = 256,
    OPT_SERVER,
    OPT_PORT,
    OPT_PORTS,
    OPT_PUBLISH_PORT,
    OPT_SCENARIO,
    OPT_CONNS,
    OPT_SOURCES,
    OPT_PARALLEL,
    OPT_CONNECT_TIMEOUT,
    OPT_PUBLISHERS,
    OPT_PUBLISH_MODE,
    OPT_IN_FLIGHT,
    OPT_API_TOKEN,
    OPT_BATCH,
    OPT_MSG_SIZE,
    OPT_WINDOW,
    OPT_DURATION,
    OPT_MESSAGES,
    OPT_RATE,
    OPT_CHANNEL,
    OPT_MARKS,
    OPT_CHANNELS,
    OPT_SUBS,
    OPT_USERS,
    OPT_BACKLOG,
    OPT_LAST_SEQ,
    OPT_SERVER_PID,
    OPT_SETTLE,
    OPT_DRAIN_TIMEOUT,
    OPT_TIMEOUT,
    OPT_PREFIX,
    OPT_SEED,
    OPT_QUIET,
    OPT_TLS,
    OPT_TLS_CA,
    OPT_TLS_INSECURE,
    OPT_TLS_SERVER_NAME,
    OPT_TLS_RESUME,
    OPT_HELP,
};

static const struct option long_opts[] = {
    {"host", required_argument, NULL, OPT_HOST},
    {"server", required_argument, NULL, OPT_SERVER},
    {"port", required_argument, NULL, OPT_PORT},
    {"ports", required_argument, NULL, OPT_PORTS},
    {"publish-port", required_argument, NULL, OPT_PUBLISH_PORT},
    {"scenario", required_argument, NULL, OPT_SCENARIO},
    {"connections", required_argument, NULL, OPT_CONNS},
    {"sources", required_argument, NULL, OPT_SOURCES},
    {"parallel", required_argument, NULL, OPT_PARALLEL},
    {"connect-timeout", required_argument, NULL, OPT_CONNECT_TIMEOUT},
    {"publishers", required_argument, NULL, OPT_PUBLISHERS},
    {"publish-mode", required_argument, NULL, OPT_PUBLISH_MODE},
    {"in-flight", required_argument, NULL, OPT_IN_FLIGHT},
    {"api-token", required_argument, NULL, OPT_API_TOKEN},
    {"batch", required_argument, NULL, OPT_BATCH},
    {"msg-size", required_argument, NULL, OPT_MSG_SIZE},
    {"window", required_argument, NULL, OPT_WINDOW},
    {"duration", required_argument, NULL, OPT_DURATION},
    {"messages", required_argument, NULL, OPT_MESSAGES},
    {"rate", required_argument, NULL, OPT_RATE},
    {"channel", required_argument, NULL, OPT_CHANNEL},
    {"marks", no_argument, NULL, OPT_MARKS},
    {"channels", required_argument, NULL, OPT_CHANNELS},
    {"subs-per-conn", required_argument, NULL, OPT_SUBS},
    {"users", required_argument, NULL, OPT_USERS},
    {"backlog", required_argument, NULL, OPT_BACKLOG},
    {"last-seq", required_argument, NULL, OPT_LAST_SEQ},
    {"server-pid", required_argument, NULL, OPT_SERVER_PID},
    {"settle", required_argument, NULL, OPT_SETTLE},
    {"drain-timeout", required_argument, NULL, OPT_DRAIN_TIMEOUT},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"user-prefix", required_argument, NULL, OPT_PREFIX},
    {"seed", required_argument, NULL, OPT_SEED},
    {"quiet", no_argument, NULL, OPT_QUIET},
    {"tls", no_argument, NULL, OPT_TLS},
    {"tls-ca", required_argument, NULL, OPT_TLS_CA},
    {"tls-insecure", no_argument, NULL, OPT_TLS_INSECURE},
    {"tls-server-name", required_argument, NULL, OPT_TLS_SERVER_NAME},
    {"tls-resume", no_argument, NULL, OPT_TLS_RESUME},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

static int parse_scenario(const char *v, enum dwb_scenario *out)
{
    for (int s = DWB_FANOUT; s <= DWB_REPLAY; s++) {
        if (strcmp(v, dwb_scenario_name((enum dwb_scenario)s)) == 0) {
            *out = (enum dwb_scenario)s;
            return 0;
        }
    }
    return bad("--scenario", v,
               "expected fanout, targeted, channels, paced, idle, connect or replay");
}

static int parse_publish_mode(const char *v, enum dwb_publish_mode *out)
{
    for (int m = DWB_PUBLISH_HTTP; m <= DWB_PUBLISH_WS; m++) {
        if (strcmp(v, dwb_publish_mode_name((enum dwb_publish_mode)m)) == 0) {
            *out = (enum dwb_publish_mode)m;
            return 0;
        }
    }
    return bad("--publish-mode", v, "expected http, pipeline or ws");
}

static int parse_server(const char *v, enum dwb_server *out)
{
    for (int s = DWB_SERVER_DEALWIRE; s <= DWB_SERVER_NCHAN; s++) {
        if (strcmp(v, dwb_server_name((enum dwb_server)s)) == 0) {
            *out = (enum dwb_server)s;
            return 0;
        }
    }
    return bad("--server", v, "expected dealwire or nchan");
}

/* A comma-separated list of 1 to max integers in lo..hi (flag's value v, whose form is what an
 * empty list is told to look like) into out; *n is how many. */
static int parse_list(const char *flag, const char *v, const char *form, unsigned long long lo,
                      unsigned long long hi, unsigned max, unsigned long long *out, unsigned *n)
{
    char buf[256], why[64], *save = NULL, *tok;
    size_t len = strlen(v);
    int err;

    if (len >= sizeof(buf))
        return bad(flag, v, "too long");
    memcpy(buf, v, len + 1);
    *n = 0;
    for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (*n == max) {
            snprintf(why, sizeof(why), "at most %u values", max);
            return bad(flag, v, why);
        }
        err = parse_uint(flag, tok, lo, hi, &out[*n]);
        if (err)
            return err;
        (*n)++;
    }
    return *n ? 0 : bad(flag, v, form);
}

static int parse_pids(const char *v, struct dwb_opts *o)
{
    unsigned long long u[DWB_MAX_PIDS];
    int err = parse_list("--server-pid", v, "expected PID[,PID...]", 1, INT32_MAX, DWB_MAX_PIDS, u,
                         &o->npids);

    for (unsigned i = 0; i < o->npids && !err; i++)
        o->server_pids[i] = (pid_t)u[i];
    return err;
}

/* --ports: distinct ports, each node once. */
static int parse_ports(const char *v, struct dwb_opts *o)
{
    unsigned long long u[DWB_MAX_PORTS];
    int err =
        parse_list("--ports", v, "expected PORT[,PORT...]", 1, 65535, DWB_MAX_PORTS, u, &o->nports);

    for (unsigned i = 0; i < o->nports && !err; i++) {
        for (unsigned j = 0; j < i; j++) {
            if (u[j] == u[i])
                return bad("--ports", v, "a port is named twice (each node once)");
        }
        o->ports[i] = (unsigned)u[i];
    }
    return err;
}

/* Parses argv into o. Returns 0, 1 after --help, or -EINVAL (message printed). */
static int parse_opts(int argc, char **argv, struct dwb_opts *o)
{
    static char replay_prefix[64];
    bool window_set = false, duration_set = false, tls_name_set = false, batch_set = false;
    bool prefix_set = false, messages_set = false, backlog_set = false, last_seq_set = false;
    bool port_set = false, in_flight_set = false, mode_set = false;
    const char *host = "127.0.0.1";
    unsigned port = 8000;
    unsigned long long u;
    int c, err = 0;

    *o = (struct dwb_opts){.conns = 100,
                           .parallel = 500,
                           .connect_timeout = 10,
                           .publishers = 16,
                           .batch = 1,
                           .msg_size = 300,
                           .duration = 10,
                           .rate = 1000,
                           .channels = 100,
                           .subs = 4,
                           .backlog = 100,
                           .settle = 2,
                           .drain_timeout = 10,
                           .timeout = 120,
                           .prefix = "bench-u",
                           .tls_server_name = "localhost"};
    o->seed = (uint64_t)dwb_now_ns() ^ (uint64_t)getpid() << 32;
    while (err == 0 && (c = getopt_long(argc, argv, "", long_opts, NULL)) != -1) {
        switch (c) {
        case OPT_HOST:
            host = strcmp(optarg, "localhost") == 0 ? "127.0.0.1" : optarg;
            break;
        case OPT_SERVER:
            err = parse_server(optarg, &o->server);
            break;
        case OPT_PORT:
            err = parse_uint("--port", optarg, 1, 65535, &u);
            port = (unsigned)u;
            port_set = true;
            break;
        case OPT_PORTS:
            err = parse_ports(optarg, o);
            break;
        case OPT_PUBLISH_PORT:
            err = parse_uint("--publish-port", optarg, 1, 65535, &u);
            o->publish_port = (unsigned)u;
            break;
        case OPT_SCENARIO:
            err = parse_scenario(optarg, &o->scenario);
            break;
        case OPT_CONNS:
            err = parse_uint("--connections", optarg, 1, 1000000, &u);
            o->conns = (unsigned)u;
            break;
        case OPT_SOURCES:
            err = parse_uint("--sources", optarg, 1, 254, &u);
            o->sources = (unsigned)u;
            break;
        case OPT_PARALLEL:
            err = parse_uint("--parallel", optarg, 1, 100000, &u);
            o->parallel = (unsigned)u;
            break;
        case OPT_CONNECT_TIMEOUT:
            err = parse_num("--connect-timeout", optarg, 0.1, 3600, &o->connect_timeout);
            break;
        case OPT_PUBLISHERS:
            err = parse_uint("--publishers", optarg, 1, 1024, &u);
            o->publishers = (unsigned)u;
            break;
        case OPT_PUBLISH_MODE:
            err = parse_publish_mode(optarg, &o->publish_mode);
            mode_set = true;
            break;
        case OPT_IN_FLIGHT:
            err = parse_uint("--in-flight", optarg, 1, 1024, &u);
            o->in_flight = (unsigned)u;
            in_flight_set = true;
            break;
        case OPT_API_TOKEN:
            o->api_token = optarg;
            /* It goes into a header line as is. */
            if (!*optarg || strlen(optarg) > DWB_MAX_TOKEN ||
                strspn(optarg, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                               "-._~+/=!#$%&'*^`|:@") != strlen(optarg))
                err = bad("--api-token", "(not shown)",
                          "expected 1-256 visible ASCII characters, no spaces or quotes");
            break;
        case OPT_BATCH:
            err = parse_uint("--batch", optarg, 1, 10000, &u);
            o->batch = (unsigned)u;
            batch_set = true;
            break;
        case OPT_MSG_SIZE:
            err = parse_uint("--msg-size", optarg, 64, 512ULL * 1024, &u);
            o->msg_size = (unsigned)u;
            break;
        case OPT_WINDOW:
            err = parse_uint("--window", optarg, 1, 1000000, &u);
            o->window = (unsigned)u;
            window_set = true;
            break;
        case OPT_DURATION:
            err = parse_num("--duration", optarg, 0, 86400, &o->duration);
            duration_set = true;
            break;
        case OPT_MESSAGES:
            err = parse_uint("--messages", optarg, 0, UINT32_MAX, &u);
            o->messages = u;
            messages_set = true;
            break;
        case OPT_RATE:
            err = parse_num("--rate", optarg, 0.001, 1e8, &o->rate);
            break;
        case OPT_CHANNEL:
            o->channel = optarg;
            /* dealwire's channel names (the bench's "chN" and nchan.conf's /sub/ too) */
            if (!*optarg || strlen(optarg) > 64 ||
                strspn(optarg,
                       "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-") !=
                    strlen(optarg))
                err = bad("--channel", optarg, "expected 1-64 of A-Z a-z 0-9 _ . : -");
            else if (strncmp(optarg, "user:", 5) == 0 || strncmp(optarg, "private-", 8) == 0)
                err = bad("--channel", optarg,
                          "user:<id> and private-* are private channels (dealwire refuses them "
                          "without a token that grants them)");
            break;
        case OPT_MARKS:
            o->marks = true;
            break;
        case OPT_CHANNELS:
            err = parse_uint("--channels", optarg, 1, 1000000, &u);
            o->channels = (unsigned)u;
            break;
        case OPT_SUBS:
            err = parse_uint("--subs-per-conn", optarg, 1, 10000, &u);
            o->subs = (unsigned)u;
            break;
        case OPT_USERS:
            err = parse_uint("--users", optarg, 1, 1000000000, &u);
            o->users = u;
            break;
        case OPT_BACKLOG:
            err = parse_uint("--backlog", optarg, 1, 100000000, &u);
            o->backlog = (uint32_t)u;
            backlog_set = true;
            break;
        case OPT_LAST_SEQ:
            err = parse_uint("--last-seq", optarg, 0, INT64_MAX, &u);
            o->last_seq = u;
            last_seq_set = true;
            break;
        case OPT_SERVER_PID:
            err = parse_pids(optarg, o);
            break;
        case OPT_SETTLE:
            err = parse_num("--settle", optarg, 0, 3600, &o->settle);
            break;
        case OPT_DRAIN_TIMEOUT:
            err = parse_num("--drain-timeout", optarg, 0.1, 3600, &o->drain_timeout);
            break;
        case OPT_TIMEOUT:
            err = parse_num("--timeout", optarg, 1, 86400, &o->timeout);
            break;
        case OPT_PREFIX:
            o->prefix = optarg;
            prefix_set = true;
            if (!*optarg || strlen(optarg) > 100 ||
                strspn(optarg,
                       "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:@-") !=
                    strlen(optarg))
                err = bad("--user-prefix", optarg, "expected 1-100 of A-Z a-z 0-9 _ . : @ -");
            break;
        case OPT_SEED:
            err = parse_uint("--seed", optarg, 1, UINT64_MAX, &u);
            o->seed = u;
            break;
        case OPT_QUIET:
            o->quiet = true;
            break;
        case OPT_TLS:
            o->tls = true;
            break;
        case OPT_TLS_CA:
            o->tls_ca = optarg;
            break;
        case OPT_TLS_INSECURE:
            o->tls_insecure = true;
            break;
        case OPT_TLS_SERVER_NAME:
            o->tls_server_name = optarg;
            tls_name_set = true;
            if (!*optarg || strlen(optarg) > 253)
                err = bad("--tls-server-name", optarg, "expected a host name or an address");
            break;
        case OPT_TLS_RESUME:
            o->tls_resume = true;
            break;
        case OPT_HELP:
            usage(stdout);
            return 1;
        default:
            usage(stderr);
            return -EINVAL;
        }
    }
    if (err)
        return err;
    if (optind < argc)
        return bad("argument", argv[optind], "no positional arguments are taken");

    if (inet_pton(AF_INET, host, &o->host) != 1 || (ntohl(o->host.s_addr) >> 24) != 127)
        return bad("--host", host, "expected an IPv4 address in 127.0.0.0/8 (loopback only)");
    inet_ntop(AF_INET, &o->host, o->host_text, sizeof(o->host_text));
    if (o->nports && port_set)
        return bad("--port", "", "not with --ports (the list names every port)");
    if ((o->nports || o->publish_port) && o->server == DWB_SERVER_NCHAN)
        return bad("--ports or --publish-port", "",
                   "not with --server nchan (one server, no nodes)");
    if (o->publish_port && (o->scenario == DWB_IDLE || o->scenario == DWB_CONNECT))
        return bad("--publish-port", "", "only with a scenario that publishes");
    if (!o->nports)
        o->ports[o->nports++] = port;
    if (!o->publish_port)
        o->publish_port = o->ports[0];
    if (!o->sources)
        o->sources = (o->conns + PORTS_PER_SOURCE - 1) / PORTS_PER_SOURCE;
    if (o->sources > 254)
        return bad("--connections", "", "more than 254 source addresses would be needed");
    if (o->conns / o->sources >= 25000)
        return bad("--sources", "", "each source address would need 25,000 ports or more");
    if (!window_set)
        o->window = o->conns <= 1000 ? 64 : 16;
    if (o->scenario == DWB_REPLAY) {
        if (o->server == DWB_SERVER_NCHAN)
            return bad("--scenario", "replay", "not with --server nchan (it has no durable inbox)");
        if (messages_set || duration_set)
            return bad("--messages or --duration", "",
                       "not with --scenario replay (--backlog M messages per user)");
        if ((uint64_t)o->conns * o->backlog > UINT32_MAX)
            return bad("--backlog", "", "--connections x --backlog must stay under 2^32");
        o->duration = 0;
        if (!batch_set)
            o->batch = 100;
        if (!prefix_set) {
            /* A user prefix of its own: the users have no history but this run's. */
            snprintf(replay_prefix, sizeof(replay_prefix), "bench-r%lld-%ld-u",
                     (long long)time(NULL), (long)getpid());
            o->prefix = replay_prefix;
        }
    } else if (backlog_set || last_seq_set) {
        return bad("--backlog or --last-seq", "", "only with --scenario replay");
    }
    if (o->batch > o->window &&
        (o->scenario == DWB_FANOUT || o->scenario == DWB_TARGETED || o->scenario == DWB_CHANNELS))
        return bad("--batch", "", "must not exceed --window (a request must fit the window)");
    if (o->messages && !duration_set)
        o->duration = 0;
    if (o->duration == 0 && o->messages == 0 && o->scenario != DWB_IDLE &&
        o->scenario != DWB_CONNECT && o->scenario != DWB_REPLAY)
        return bad("--duration", "0", "needs --messages: a run must be bounded");
    if (o->users == 0)
        o->users = o->conns;
    if (o->users != o->conns && o->scenario != DWB_TARGETED)
        return bad("--users", "", "only with --scenario targeted");
    if (o->users < o->conns)
        return bad("--users", "", "must not be fewer than --connections");
    if (o->scenario == DWB_CHANNELS && o->subs > o->channels)
        return bad("--subs-per-conn", "", "must not exceed --channels");
    if (o->server == DWB_SERVER_NCHAN && o->batch > 1)
        return bad("--batch", "", "nchan publishes one message per request: --batch 1 only");
    if (o->server == DWB_SERVER_NCHAN && o->scenario == DWB_CHANNELS)
        return bad("--scenario", "channels",
                   "not with --server nchan (fanout, targeted, paced, "
                   "idle and connect are)");
    if (!o->tls && (o->tls_ca || o->tls_insecure || tls_name_set || o->tls_resume))
        return bad("--tls-ca, --tls-insecure, --tls-server-name or --tls-resume", "",
                   "only with --tls");
    if (o->tls && !o->tls_ca && !o->tls_insecure)
        return bad("--tls", "", "needs --tls-ca FILE (verify the server) or --tls-insecure");
    if (o->tls_ca && o->tls_insecure)
        return bad("--tls-insecure", "", "not with --tls-ca (verify, or do not)");
    if (in_flight_set && o->publish_mode == DWB_PUBLISH_HTTP)
        return bad("--in-flight", "",
                   "only with --publish-mode pipeline or ws (http has 1 request in flight)");
    o->in_flight = o->publish_mode == DWB_PUBLISH_HTTP ? 1 : in_flight_set ? o->in_flight : 16;
    if ((mode_set || in_flight_set || o->api_token) &&
        (o->scenario == DWB_IDLE || o->scenario == DWB_CONNECT))
        return bad("--publish-mode, --in-flight or --api-token", "",
                   "only with a scenario that publishes");
    if (o->server == DWB_SERVER_NCHAN && o->api_token)
        return bad("--api-token", "(not shown)", "not with --server nchan (it takes no token)");
    if (o->server == DWB_SERVER_NCHAN && o->publish_mode == DWB_PUBLISH_WS &&
        o->scenario != DWB_FANOUT && o->scenario != DWB_PACED)
        return bad("--publish-mode", "ws",
                   "with --server nchan only for fanout and paced (nchan's publish socket is "
                   "bound to one channel, /pub/all or /pub/<--channel>)");
    if (o->channel && o->scenario != DWB_FANOUT && o->scenario != DWB_PACED)
        return bad("--channel", o->channel,
                   "only with --scenario fanout or paced (the messages to everyone)");
    if (o->channel)
        o->subs = 1; /* dealwire: one subscribe command per connection, confirmed */
    if (o->marks &&
        (o->scenario == DWB_IDLE || o->scenario == DWB_CONNECT || o->scenario == DWB_REPLAY))
        return bad("--marks", "",
                   "only with a scenario that publishes (fanout, targeted, channels, paced)");
    if (o->scenario == DWB_IDLE && !o->npids)
        fprintf(stderr, DWB_NAME ": no --server-pid: the server's RSS is not measured\n");
    return 0;
}

/* ---- limits ---------------------------------------------------------------------------- */

/* Raises the soft RLIMIT_NOFILE to the hard one; refuses a run that would not fit. */
static int raise_nofile(const struct dwb_opts *o)
{
    struct rlimit rl;
    unsigned long long need = (unsigned long long)o->conns + o->publishers + DWB_FD_RESERVE;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        perror(DWB_NAME ": getrlimit");
        return -errno;
    }
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
            perror(DWB_NAME ": setrlimit");
            return -errno;
        }
    }
    if (rl.rlim_cur != RLIM_INFINITY && need > rl.rlim_cur) {
        fprintf(stderr,
                DWB_NAME ": %u connections + %u publishers + %u reserved = %llu files, but this "
                         "process may open at most %llu (RLIMIT_NOFILE hard limit): lower "
                         "--connections to %llu or less\n",
                o->conns, o->publishers, DWB_FD_RESERVE, need, (unsigned long long)rl.rlim_cur,
                (unsigned long long)rl.rlim_cur - o->publishers - DWB_FD_RESERVE);
        return -EMFILE;
    }
    return 0;
}

/* ---- phases ---------------------------------------------------------------------------- */

static const char *const phase_names[] = {
    [DWB_PHASE_SETUP] = "storing the messages to replay",
    [DWB_PHASE_CONNECT] = "connecting",
    [DWB_PHASE_SUBSCRIBE] = "subscribing",
    [DWB_PHASE_SETTLE] = "settling",
    [DWB_PHASE_PUBLISH] = "publishing",
    [DWB_PHASE_DRAIN] = "draining",
    [DWB_PHASE_CLOSE] = "closing",
    [DWB_PHASE_DONE] = "done",
};

static void enter(struct dwb_run *run, enum dwb_phase phase, int64_t now)
{
    run->phase = phase;
    run->phase_started = now;
    switch (phase) {
    case DWB_PHASE_SETUP:
        dwb_cpu_mark(run, DWB_CPU_SETUP);
        dwb_scenario_setup_start(run, now);
        break;
    case DWB_PHASE_CONNECT:
        if (run->setup_start) {
            /* replay: the set-up is over; its publishers are not needed any more */
            run->setup_end = now;
            for (unsigned i = 0; i < run->opt.publishers; i++)
                dwb_pub_close(&run->pubs[i]);
            dwb_cpu_mark(run, DWB_CPU_CONNECT);
        }
        break;
    case DWB_PHASE_SUBSCRIBE:
        run->subscribe_start = now;
        dwb_scenario_subscribe(run);
        break;
    case DWB_PHASE_PUBLISH:
        run->subscribe_end = run->subscribe_start ? now : 0;
        dwb_cpu_mark(run, DWB_CPU_PUBLISH);
        for (unsigned i = 0; i < run->opt.publishers; i++) {
            int err = dwb_pub_open(run, &run->pubs[i]);

            if (err < 0) {
                dwb_note_error(run, "publisher %u: connect: %s", i, strerror(-err));
                run->aborted = true;
            }
        }
        break;
    case DWB_PHASE_DRAIN:
        run->pub_end = now;
        break;
    case DWB_PHASE_CLOSE:
        for (unsigned i = 0; i < run->opt.publishers; i++)
            dwb_pub_close(&run->pubs[i]);
        for (unsigned i = 0; i < run->opt.conns; i++)
            dwb_ws_close(run, &run->conns[i]);
        break;
    default:
        break;
    }
}

/* Seconds from t to now. */
static double since(int64_t t, int64_t now)
{
    return (double)(now - t) / 1e9;
}

static void step_connect(struct dwb_run *run, int64_t now)
{
    const struct dwb_opts *o = &run->opt;

    while (run->inflight < o->parallel && run->next_conn < o->conns) {
        struct dwb_conn *c = &run->conns[run->next_conn++];

        if (!run->connect_start)
            run->connect_start = now;
        run->inflight++;
        dwb_ws_start(run, c);
    }
    if (now - run->last_expire > 100000000) {
        dwb_ws_expire(run, now);
        run->last_expire = now;
    }
    if (run->next_conn < o->conns || run->inflight > 0)
        return;
    if (run->n.connect_failed > 0 && o->scenario != DWB_CONNECT) {
        dwb_note_error(run, "%llu of %u connections failed",
                       (unsigned long long)run->n.connect_failed, o->conns);
        run->aborted = true;
        enter(run, DWB_PHASE_CLOSE, now);
    } else if (o->scenario == DWB_CONNECT) {
        enter(run, DWB_PHASE_CLOSE, now);
    } else if (o->scenario == DWB_IDLE) {
        enter(run, DWB_PHASE_SETTLE, now);
    } else if (o->scenario == DWB_CHANNELS || (o->channel && o->server == DWB_SERVER_DEALWIRE)) {
        enter(run, DWB_PHASE_SUBSCRIBE, now); /* nchan: subscribed by the upgrade's path */
    } else if (o->scenario == DWB_REPLAY) {
        enter(run, DWB_PHASE_DRAIN, now); /* nothing to publish: wait for the replays */
    } else {
        enter(run, DWB_PHASE_PUBLISH, now);
    }
}

/* Whether a publisher has requests outstanding. */
static bool pubs_outstanding(const struct dwb_run *run)
{
    for (unsigned i = 0; i < run->opt.publishers; i++) {
        if (run->pubs[i].nreqs > 0)
            return true;
    }
    return false;
}

/* Whether a publisher is still connecting (ws: or upgrading). One that takes longer than
 * --connect-timeout ends the run. */
static bool pubs_opening(struct dwb_run *run, int64_t now)
{
    bool opening = false;

    for (unsigned i = 0; i < run->opt.publishers; i++) {
        struct dwb_pub *pub = &run->pubs[i];

        if (!dwb_pub_is_opening(pub))
            continue;
        if (since(pub->opened_ns, now) >= run->opt.connect_timeout) {
            dwb_note_error(run, "publisher %u: connect%s timed out", i,
                           run->opt.publish_mode == DWB_PUBLISH_WS ? " or upgrade" : "");
            dwb_pub_close(pub);
            run->aborted = true;
            continue;
        }
        opening = true;
    }
    return opening;
}

/* --marks: the SIGUSR1s that arrived since the last tick, at now (the loop wakes at once: a
 * signal interrupts epoll_wait). The first opens the span, the second closes it. */
static void take_marks(struct dwb_run *run, int64_t now)
{
    unsigned seen = (unsigned)mark_signals;

    for (; run->marks_taken < seen; run->marks_taken++) {
        if (run->marks_taken == 0)
            run->mark_open = now;
        else if (run->marks_taken == 1)
            run->mark_close = now;
    }
}

/* Moves the run on: phase ends, timeouts, pacing. */
static void tick(struct dwb_run *run, int64_t now)
{
    const struct dwb_opts *o = &run->opt;
    int64_t last;

    if (o->marks)
        take_marks(run, now);

    if (run->phase < DWB_PHASE_CLOSE) {
        if (stop_signal) {
            run->interrupted = true;
            dwb_note_error(run, "interrupted by signal %d", (int)stop_signal);
            enter(run, DWB_PHASE_CLOSE, now);
        } else if (since(run->t0, now) >= o->timeout) {
            run->timed_out = true;
            dwb_note_error(run, "hard timeout (%.0f s) while %s", o->timeout,
                           phase_names[run->phase]);
            enter(run, DWB_PHASE_CLOSE, now);
        }
    }
    switch (run->phase) {
    case DWB_PHASE_SETUP:
        if (run->aborted)
            enter(run, DWB_PHASE_CLOSE, now);
        else if (dwb_scenario_setup_step(run, now))
            enter(run, DWB_PHASE_CONNECT, now);
        break;
    case DWB_PHASE_CONNECT:
        step_connect(run, now);
        break;
    case DWB_PHASE_SUBSCRIBE:
        if (run->n.error_msgs > 0) {
            run->n.subs_failed++;
            run->aborted = true; /* the error message is the first error */
            enter(run, DWB_PHASE_CLOSE, now);
        } else if (run->subscribed == run->ready || run->ready == 0) {
            enter(run, DWB_PHASE_PUBLISH, now);
        } else if (since(run->phase_started, now) >= o->connect_timeout) {
            dwb_note_error(run, "%u of %u connections without every subscription confirmed",
                           run->ready - run->subscribed, run->ready);
            run->n.subs_failed += run->ready - run->subscribed;
            run->aborted = true;
            enter(run, DWB_PHASE_CLOSE, now);
        }
        break;
    case DWB_PHASE_SETTLE:
        if (since(run->phase_started, now) >= o->settle) {
            if (o->npids)
                run->rss_after_kb = dwb_read_server_rss_kb(o);
            run->rss_conns = run->ready;
            dwb_read_sockstat(run->sockstat, sizeof(run->sockstat));
            enter(run, DWB_PHASE_CLOSE, now);
        }
        break;
    case DWB_PHASE_PUBLISH:
        if (pubs_opening(run, now))
            break;
        if (dwb_scenario_publish_done(run, now))
            enter(run, DWB_PHASE_DRAIN, now);
        else
            dwb_scenario_pump(run, now);
        break;
    case DWB_PHASE_DRAIN:
        last = run->last_delivery > run->phase_started ? run->last_delivery : run->phase_started;
        if (!pubs_outstanding(run) && run->recv_total >= run->expected_total) {
            dwb_cpu_mark(run, DWB_CPU_END);
            enter(run, DWB_PHASE_CLOSE, now);
        } else if (since(last, now) >= o->drain_timeout) {
            dwb_note_error(run, "drain: nothing arrived for %.1f s (%llu of %llu deliveries)",
                           o->drain_timeout, (unsigned long long)run->recv_total,
                           (unsigned long long)run->expected_total);
            enter(run, DWB_PHASE_CLOSE, now);
        }
        break;
    case DWB_PHASE_CLOSE: {
        bool open = false;

        for (unsigned i = 0; i < o->conns && !open; i++)
            open = run->conns[i].ev.fd >= 0;
        if (!open || since(run->phase_started, now) >= CLOSE_WAIT_S) {
            for (unsigned i = 0; i < o->conns; i++)
                dwb_ws_drop(run, &run->conns[i], DWB_WS_CLOSED);
            run->phase = DWB_PHASE_DONE;
        }
        break;
    }
    case DWB_PHASE_DONE:
        break;
    }
    if (now - run->last_progress_ns >= 1000000000)
        dwb_report_progress(run, now);
}

static void dispatch(struct dwb_run *run, struct epoll_event *e)
{
    struct dwb_fd *ev = e->data.ptr;

    if (ev->fd < 0)
        return; /* closed earlier in this batch */
    if (ev->kind == DWB_FD_WS)
        dwb_ws_on_event(run, (struct dwb_conn *)ev, e->events);
    else
        dwb_pub_on_event(run, (struct dwb_pub *)ev, e->events);
}

static void loop(struct dwb_run *run)
{
    struct epoll_event events[MAX_EVENTS];

    while (run->phase != DWB_PHASE_DONE) {
        int wait_ms = run->phase == DWB_PHASE_PUBLISH && run->opt.scenario == DWB_PACED ? 1 : 10;
        int n = epoll_wait(run->epfd, events, MAX_EVENTS, wait_ms);
        int64_t now;

        if (n < 0 && errno != EINTR) {
            perror(DWB_NAME ": epoll_wait");
            run->aborted = true;
            break;
        }
        for (int i = 0; i < n; i++)
            dispatch(run, &events[i]);
        now = dwb_now_ns();
        tick(run, now);
    }
}

/* ---- main ------------------------------------------------------------------------------ */

static int setup(struct dwb_run *run)
{
    const struct dwb_opts *o = &run->opt;
    size_t body_cap = (size_t)o->batch * (o->msg_size + 512) + 16;

    run->epfd = epoll_create1(EPOLL_CLOEXEC);
    run->conns = calloc(o->conns, sizeof(*run->conns));
    run->pubs = calloc(o->publishers, sizeof(*run->pubs));
    if (run->epfd < 0 || !run->conns || !run->pubs)
        return -ENOMEM;
    for (unsigned i = 0; i < o->conns; i++) {
        struct dwb_conn *c = &run->conns[i];

        c->ev.kind = DWB_FD_WS;
        c->ev.fd = -1;
        c->index = i;
        c->port = (uint16_t)o->ports[i % o->nports];
        c->local = c->port == o->publish_port;
    }
    for (unsigned i = 0; i < o->publishers; i++) {
        if (dwb_pub_init(&run->pubs[i], i, body_cap, o->batch, o->in_flight) < 0)
            return -ENOMEM;
    }
    dwb_hist_init(&run->lat);
    dwb_hist_init(&run->hs);
    dwb_hist_init(&run->catchup);
    dwb_hist_init(&run->marked);
    run->rng = o->seed ? o->seed : 1;
    return dwb_scenario_init(run);
}

static void teardown(struct dwb_run *run)
{
    if (run->conns) {
        for (unsigned i = 0; i < run->opt.conns; i++)
            dwb_ws_drop(run, &run->conns[i], DWB_WS_CLOSED);
    }
    if (run->pubs) {
        for (unsigned i = 0; i < run->opt.publishers; i++)
            dwb_pub_destroy(&run->pubs[i]);
    }
    dwb_scenario_free(run);
    free(run->conns);
    free(run->pubs);
    if (run->epfd >= 0)
        close(run->epfd);
    dwb_net_free(run);
}

int main(int argc, char **argv)
{
    static struct dwb_run run; /* large (two histograms): not on the stack */
    struct sigaction sa = {.sa_handler = on_signal};
    bool complete;
    int err;

    run.epfd = -1;
    err = parse_opts(argc, argv, &run.opt);
    if (err)
        return err > 0 ? 0 : EXIT_USAGE;
    if (raise_nofile(&run.opt) < 0)
        return EXIT_USAGE;
    signal(SIGPIPE, SIG_IGN);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (run.opt.marks) {
        struct sigaction mark = {.sa_handler = on_mark};

        sigaction(SIGUSR1, &mark, NULL);
    }

    if (dwb_net_init(&run) < 0)
        return EXIT_USAGE;
    if (setup(&run) < 0) {
        fprintf(stderr, DWB_NAME ": out of memory or no epoll\n");
        teardown(&run);
        return 1;
    }
    run.rss_before_kb = run.rss_after_kb = -1;
    if (run.opt.npids) {
        run.rss_before_kb = dwb_read_server_rss_kb(&run.opt);
        if (run.rss_before_kb < 0)
            fprintf(stderr, DWB_NAME ": cannot read the VmRSS of every --server-pid\n");
    }
    run.t0 = run.last_progress_ns = dwb_now_ns();
    enter(&run, run.opt.scenario == DWB_REPLAY ? DWB_PHASE_SETUP : DWB_PHASE_CONNECT, run.t0);
    loop(&run);
    complete = dwb_report_final(&run);
    teardown(&run);
    return complete ? 0 : 1;
}
