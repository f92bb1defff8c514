/*
 * report — DESIGN: everything the bench prints. Progress goes to stderr, about once a second,
 * so that stdout holds only the result: a table for people, then one JSON line per result
 * that starts with {"bench":"dealwire-bench" so scripts can grep it. Rates are taken over the
 * measured window: from the first publish request to the last delivery (publishing
 * scenarios), or from the first connect to the last connection_established (connect), or from
 * the first connect to the last replayed message (replay; its set-up is reported apart and is
 * not in the rates).
 * With --tls, a tls line says what the first handshake negotiated and how the certificate was
 * checked, and the JSON line carries "tls":true with the version, cipher and group.
 * With several ports (--ports, nodes sharing messages over Redis), a nodes line says how the
 * clients were spread and where the publishers posted, with each port's deliveries and
 * missing ones, so a node that loses messages shows.
 * With --marks, a marked line gives the latency of the messages published inside the span the
 * SIGUSR1s marked, and when it was, in seconds from the start of publishing (marked_* in JSON).
 */
#include "bench.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define NS 1e9

long dwb_read_rss_kb(pid_t pid)
{
    char path[64], line[256];
    long kb = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%ld/status", (long)pid);
    f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f)) {
        static const char key[] = "VmRSS:";
        char *end;
        long v;

        if (strncmp(line, key, sizeof(key) - 1) != 0)
            continue;
        v = strtol(line + sizeof(key) - 1, &end, 10); /* "VmRSS:    1234 kB" */
        if (end != line + sizeof(key) - 1) {
            kb = v;
            break;
        }
    }
    fclose(f);
    return kb;
}

long dwb_read_server_rss_kb(const struct dwb_opts *o)
{
    long sum = 0;

    for (unsigned i = 0; i < o->npids; i++) {
        long kb = dwb_read_rss_kb(o->server_pids[i]);

        if (kb < 0)
            return -1;
        sum += kb;
    }
    return o->npids ? sum : -1;
}

double dwb_read_cpu_ms(pid_t pid)
{
    char path[64], buf[1024], *p, *end;
    unsigned long long v[2];
    long tick = sysconf(_SC_CLK_TCK);
    size_t n;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
    f = fopen(path, "r");
    if (!f)
        return -1;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* "pid (comm) state ppid ...": comm may hold spaces and parentheses; utime and stime are
     * the 14th and 15th fields, the 12th and 13th after the state. */
    p = strrchr(buf, ')');
    if (!p || tick <= 0)
        return -1;
    for (int field = 0; field < 12; field++) {
        p = strchr(p + 1, ' ');
        if (!p)
            return -1;
    }
    for (int k = 0; k < 2; k++) {
        errno = 0;
        v[k] = strtoull(p + 1, &end, 10);
        if (errno || end == p + 1 || (*end != ' ' && *end != '\0'))
            return -1;
        p = end;
    }
    return (double)(v[0] + v[1]) * 1000.0 / (double)tick;
}

void dwb_cpu_mark(struct dwb_run *run, enum dwb_cpu_mark mark)
{
    struct rusage ru;

    for (unsigned i = 0; i < run->opt.npids; i++)
        run->cpu_ms[mark][i] = dwb_read_cpu_ms(run->opt.server_pids[i]);
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        run->cpu_ms[mark][DWB_MAX_PIDS] = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
                                          (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
    run->cpu_at[mark] = dwb_now_ns();
    run->cpu_marked[mark] = true;
}

/* CPU ms of process i (DWB_MAX_PIDS: the bench) between two marks, or -1. */
static double cpu_between(const struct dwb_run *run, enum dwb_cpu_mark a, enum dwb_cpu_mark b,
                          unsigned i)
{
    double x = run->cpu_ms[a][i], y = run->cpu_ms[b][i];

    if (!run->cpu_marked[a] || !run->cpu_marked[b] || x < 0 || y < 0)
        return -1;
    return y - x;
}

/* A CPU time in ms for the JSON line: null when it was not measured. */
static void print_json_ms(double ms)
{
    if (ms < 0)
        printf("null");
    else
        printf("%.0f", ms);
}

/* Seconds between two marks (0 when either is missing). */
static double cpu_window_s(const struct dwb_run *run, enum dwb_cpu_mark a, enum dwb_cpu_mark b)
{
    if (!run->cpu_marked[a] || !run->cpu_marked[b])
        return 0;
    return (double)(run->cpu_at[b] - run->cpu_at[a]) / NS;
}

/* The CPU line of one span, for the table: each process's ms and share of one core, and the
 * --server-pid sum per unit ("message", "delivery") of n. */
static void print_cpu(const struct dwb_run *run, const char *label, enum dwb_cpu_mark a,
                      enum dwb_cpu_mark b, uint64_t n, const char *unit)
{
    const struct dwb_opts *o = &run->opt;
    double bench = cpu_between(run, a, b, DWB_MAX_PIDS), sum = 0;
    double window = cpu_window_s(run, a, b), core = window > 0 ? 100 / (window * 1e3) : 0;
    bool all = o->npids > 0;

    if (bench < 0) {
        printf("  cpu         %s: not measured (it did not end)\n", label);
        return;
    }
    printf("  cpu         %s (%.3f s): bench %.0f ms (%.0f %%)", label, window, bench,
           bench * core);
    for (unsigned i = 0; i < o->npids; i++) {
        double ms = cpu_between(run, a, b, i);

        if (ms < 0)
            printf(", pid %ld unreadable", (long)o->server_pids[i]);
        else
            printf(", pid %ld %.0f ms (%.0f %%)", (long)o->server_pids[i], ms, ms * core);
        all = all && ms >= 0;
        sum += ms;
    }
    if (all && n)
        printf(" (--server-pid: %.0f ms, %.2f us per %s)", sum, sum * 1e3 / (double)n, unit);
    putchar('\n');
}

/* Each --server-pid's CPU ms between two marks, a JSON array under key (and a comma). */
static void print_json_cpu(const struct dwb_run *run, const char *key, enum dwb_cpu_mark a,
                           enum dwb_cpu_mark b)
{
    printf("\"%s\":[", key);
    for (unsigned i = 0; i < run->opt.npids; i++) {
        printf("%s", i ? "," : "");
        print_json_ms(cpu_between(run, a, b, i));
    }
    printf("],");
}

/* Several ports: how the clients were spread, where the publishers posted, and each port's
 * deliveries and missing ones. */
static void print_nodes(const struct dwb_run *run)
{
    const struct dwb_opts *o = &run->opt;
    bool publishing = o->scenario != DWB_IDLE && o->scenario != DWB_CONNECT;

    printf("  nodes       %u port%s on %s", o->nports, o->nports == 1 ? "" : "s", o->host_text);
    if (publishing)
        printf(", publishers on %u (its answers count only its own clients)", o->publish_port);
    printf("; clients round-robin:");
    for (unsigned k = 0; k < o->nports; k++) {
        unsigned clients = 0;
        uint64_t got = 0, missing, extra;

        for (unsigned i = 0; i < o->conns; i++) {
            if (run->conns[i].port == o->ports[k]) {
                clients++;
                got += run->conns[i].recv;
            }
        }
        dwb_scenario_missing(run, o->ports[k], &missing, &extra);
        printf("%s %u %u clients", k ? ";" : "", o->ports[k], clients);
        if (publishing)
            printf(", %llu deliveries, %llu missing", (unsigned long long)got,
                   (unsigned long long)missing);
    }
    putchar('\n');
}

void dwb_read_sockstat(char *out, size_t size)
{
    char line[256];
    size_t n = 0;
    FILE *f = fopen("/proc/net/sockstat", "r");

    out[0] = '\0';
    if (!f)
        return;
    for (int i = 0; i < 2 && fgets(line, sizeof(line), f); i++)
        n += (size_t)snprintf(out + n, size - n, "  sockstat    %s", line);
    fclose(f);
}

static double rate(uint64_t n, double seconds)
{
    return seconds > 0 ? (double)n / seconds : 0;
}

void dwb_report_progress(struct dwb_run *run, int64_t now)
{
    double dt = (double)(now - run->last_progress_ns) / NS;
    uint64_t got = run->n.recv_msgs - run->last.recv_msgs;
    uint64_t sent = run->n.sent_msgs - run->last.sent_msgs;

    if (run->opt.quiet || dt <= 0)
        return;
    if (run->opt.scenario == DWB_REPLAY) {
        uint64_t stored = run->n.stored - run->last.stored;

        if (run->phase == DWB_PHASE_SETUP)
            fprintf(stderr, "[%6.1fs] replay   set-up: stored %llu of %llu messages (%.0f/s)\n",
                    (double)(now - run->t0) / NS, (unsigned long long)run->n.stored,
                    (unsigned long long)run->opt.conns * run->opt.backlog, rate(stored, dt));
        else
            fprintf(stderr,
                    "[%6.1fs] replay   connected %u/%u  caught up %llu  replayed %llu (%.0f/s)%s\n",
                    (double)(now - run->t0) / NS, run->ready, run->opt.conns,
                    (unsigned long long)run->n.caught_up, (unsigned long long)run->n.recv_msgs,
                    rate(got, dt),
                    run->n.lost + run->n.connect_failed ? "  (connections lost or failed)" : "");
        run->last = run->n;
        run->last_progress_ns = now;
        return;
    }
    fprintf(stderr,
            "[%6.1fs] %-8s connected %u/%u  sent %llu (%.0f/s)  received %llu  %.0f deliveries/s"
            "%s\n",
            (double)(now - run->t0) / NS, dwb_scenario_name(run->opt.scenario), run->ready,
            run->opt.conns, (unsigned long long)run->n.sent_msgs, rate(sent, dt),
            (unsigned long long)run->n.recv_msgs, rate(got, dt),
            run->n.lost + run->n.connect_failed ? "  (connections lost or failed)" : "");
    run->last = run->n;
    run->last_progress_ns = now;
}

static double us(uint64_t ns)
{
    return (double)ns / 1e3;
}

/* Prints s as a JSON string (quotes included). Bytes outside printable ASCII (a server's
 * garbage quoted in an error) become \u00XX, so the line stays valid UTF-8. */
static void print_json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;

        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20 || ch > 0x7e)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

static void print_tls(const struct dwb_run *run)
{
    const struct dwb_opts *o = &run->opt;

    if (!run->tls_version[0]) {
        printf("  tls         no handshake completed\n");
        return;
    }
    printf("  tls         %s %s, key exchange %s; server certificate %s; ", run->tls_version,
           run->tls_cipher, run->tls_group, run->tls_cert);
    if (o->tls_insecure)
        printf("NOT verified (--tls-insecure)");
    else
        printf("verified against %s for %s", o->tls_ca, o->tls_server_name);
    printf("; handshakes %llu full, %llu resumed%s\n", (unsigned long long)run->n.tls_full,
           (unsigned long long)run->n.tls_resumed, o->tls_resume ? " (--tls-resume)" : "");
}

/* h's p50, p99, p99.9 and max, as the table prints them. */
static void print_quantiles(const struct dwb_hist *h)
{
    printf("p50 %.0f us, p99 %.0f us, p99.9 %.0f us, max %.0f us", us(dwb_hist_quantile(h, 0.5)),
           us(dwb_hist_quantile(h, 0.99)), us(dwb_hist_quantile(h, 0.999)),
           us(h->count ? h->max : 0));
}

/* The same as JSON members <prefix>p50_us ... <prefix>max_us, each followed by a comma. */
static void print_json_quantiles(const char *prefix, const struct dwb_hist *h)
{
    printf("\"%sp50_us\":%.1f,\"%sp99_us\":%.1f,\"%sp999_us\":%.1f,\"%smax_us\":%.1f,", prefix,
           us(dwb_hist_quantile(h, 0.5)), prefix, us(dwb_hist_quantile(h, 0.99)), prefix,
           us(dwb_hist_quantile(h, 0.999)), prefix, us(h->count ? h->max : 0));
}

/* --marks: seconds from the start of publishing (the run's start before it) to mark t. */
static double mark_s(const struct dwb_run *run, int64_t t)
{
    return (double)(t - (run->pub_start ? run->pub_start : run->t0)) / NS;
}

/* --marks: the marked line, the latency of the messages published inside the span. */
static void print_marked(const struct dwb_run *run)
{
    const struct dwb_hist *m = &run->marked;

    if (!run->mark_open) {
        printf("  marked      no span: no SIGUSR1 arrived\n");
        return;
    }
    printf("  marked      span from %.3f s to ", mark_s(run, run->mark_open));
    if (run->mark_close)
        printf("%.3f s", mark_s(run, run->mark_close));
    else
        printf("the end (one SIGUSR1)");
    printf(" of publishing: %llu messages published in it, %llu deliveries; ",
           (unsigned long long)run->marked_msgs, (unsigned long long)m->count);
    print_quantiles(m);
    putchar('\n');
}

/* --marks: the marked_* members of the JSON line (and a comma); null when there is no span or
 * it was not closed. */
static void print_json_marked(const struct dwb_run *run)
{
    const struct dwb_hist *m = &run->marked;

    printf("\"marks\":%u,\"marked_from_s\":", run->marks_taken);
    if (run->mark_open)
        printf("%.3f", mark_s(run, run->mark_open));
    else
        printf("null");
    printf(",\"marked_to_s\":");
    if (run->mark_close)
        printf("%.3f", mark_s(run, run->mark_close));
    else
        printf("null");
    printf(",\"marked_messages\":%llu,\"marked_samples\":%llu,",
           (unsigned long long)run->marked_msgs, (unsigned long long)m->count);
    print_json_quantiles("marked_", m);
}

bool dwb_report_final(struct dwb_run *run)
{
    const struct dwb_opts *o = &run->opt;
    uint64_t missing, extra;
    double conn_s = run->connect_end > run->connect_start
                        ? (double)(run->connect_end - run->connect_start) / NS
                        : 0;
    double pub_s = run->pub_start && run->last_delivery > run->pub_start
                       ? (double)(run->last_delivery - run->pub_start) / NS
                       : 0;
    double send_s =
        run->pub_end > run->pub_start ? (double)(run->pub_end - run->pub_start) / NS : 0;
    /* replay: the set-up (untimed), and from the first connect to the last replayed message */
    double setup_s =
        run->setup_end > run->setup_start ? (double)(run->setup_end - run->setup_start) / NS : 0;
    double replay_s = run->connect_start && run->last_delivery > run->connect_start
                          ? (double)(run->last_delivery - run->connect_start) / NS
                          : 0;
    bool replay = o->scenario == DWB_REPLAY;
    bool publishing = o->scenario != DWB_IDLE && o->scenario != DWB_CONNECT && !replay;
    const struct dwb_hist *h = o->scenario == DWB_CONNECT ? &run->hs
                               : replay                   ? &run->catchup
                                                          : &run->lat;
    long rss_delta = run->rss_after_kb - run->rss_before_kb;
    bool have_rss = run->rss_before_kb >= 0 && run->rss_after_kb >= 0 && run->rss_conns > 0;
    double rss_per_conn = have_rss ? (double)rss_delta * 1024 / run->rss_conns : 0;
    bool complete;

    dwb_scenario_missing(run, 0, &missing, &extra);
    complete = !run->timed_out && !run->aborted && !run->interrupted &&
               run->n.connected == o->conns && run->n.connect_failed == 0 && run->n.lost == 0 &&
               run->n.server_closes == 0 && missing == 0 && extra == 0 && run->n.dup == 0 &&
               run->n.ooo == 0 && run->n.malformed == 0 && run->n.misrouted == 0 &&
               run->n.http_errors == 0 && run->n.recipient_mismatch == 0 &&
               run->n.subs_failed == 0 && run->n.ws_errors == 0 && run->n.error_msgs == 0 &&
               run->n.answer_seq_bad == 0 && run->n.unexpected_seq == 0 &&
               run->n.wrong_message == 0 && run->n.welcome_bad == 0 && run->n.not_recovered == 0 &&
               (!replay ||
                (run->n.caught_up == o->conns && run->n.stored == (uint64_t)o->conns * o->backlog));

    printf("%s %s against %s: %u connections from %u source address%s", DWB_NAME,
           dwb_scenario_name(o->scenario), dwb_server_name(o->server), o->conns, o->sources,
           o->sources == 1 ? "" : "es");
    if (publishing)
        printf(", %u publishers (%s, %u in flight each), W=%u, batch %u, message ~%u B",
               o->publishers, dwb_publish_mode_name(o->publish_mode), o->in_flight,
               dwb_scenario_window(run), o->batch, o->msg_size);
    if (o->scenario == DWB_CHANNELS)
        printf(", %u channels, %u per connection", o->channels, o->subs);
    if (o->scenario == DWB_PACED)
        printf(", %.0f messages/s", o->rate);
    if (o->channel)
        printf(", to channel %s", o->channel);
    if (replay)
        printf(", %u critical messages of ~%u B stored per user %s<i> (%u publishers, batch "
               "%u), resuming from last_seq=%llu",
               o->backlog, o->msg_size, o->prefix, o->publishers, o->batch,
               (unsigned long long)o->last_seq);
    printf(", %s, seed %llu\n", o->tls ? "over TLS (wss, https)" : "plain (ws, http)",
           (unsigned long long)o->seed);
    if (o->tls)
        print_tls(run);
    if (o->nports > 1 || o->publish_port != o->ports[0])
        print_nodes(run);
    if (replay)
        printf("  set-up      stored %llu of %llu messages in %llu requests in %.3f s (%.0f/s, "
               "untimed); %llu refused or unanswered, %llu recipient mismatches, %llu seqs out "
               "of turn\n",
               (unsigned long long)run->n.stored, (unsigned long long)o->conns * o->backlog,
               (unsigned long long)run->n.answered_reqs, setup_s, rate(run->n.stored, setup_s),
               (unsigned long long)run->n.http_errors,
               (unsigned long long)run->n.recipient_mismatch,
               (unsigned long long)run->n.answer_seq_bad);
    printf("  connect     %llu ready, %llu failed in %.3f s (%.0f conn/s); %s p50 %.0f us,"
           " p99 %.0f us, p99.9 %.0f us\n",
           (unsigned long long)run->n.connected, (unsigned long long)run->n.connect_failed, conn_s,
           rate(run->n.connected, conn_s), replay ? "welcome (after the first page)" : "handshake",
           us(dwb_hist_quantile(&run->hs, 0.5)), us(dwb_hist_quantile(&run->hs, 0.99)),
           us(dwb_hist_quantile(&run->hs, 0.999)));
    if (o->scenario == DWB_CHANNELS && run->subscribe_end)
        printf("  subscribed  %u connections to %u channels each in %.3f s (%.0f subscribes/s)\n",
               run->subscribed, o->subs, (double)(run->subscribe_end - run->subscribe_start) / NS,
               rate((uint64_t)run->subscribed * o->subs,
                    (double)(run->subscribe_end - run->subscribe_start) / NS));
    if (o->channel && run->subscribe_end)
        printf("  subscribed  %u connections to channel %s in %.3f s\n", run->subscribed,
               o->channel, (double)(run->subscribe_end - run->subscribe_start) / NS);
    if (publishing) {
        printf("  published   %llu messages (%.0f/s) in %llu requests (%llu answered, %llu "
               "refused or unanswered, %llu recipient mismatches)\n",
               (unsigned long long)run->n.sent_msgs, rate(run->n.sent_msgs, send_s),
               (unsigned long long)run->n.sent_reqs, (unsigned long long)run->n.answered_reqs,
               (unsigned long long)run->n.http_errors,
               (unsigned long long)run->n.recipient_mismatch);
        if (o->users > o->conns)
            printf("  offline     %llu messages to users with no connection (%llu user ids, %u "
                   "connected)\n",
                   (unsigned long long)run->n.offline, (unsigned long long)o->users, o->conns);
        printf("  delivered   %llu messages, %llu bytes in %.3f s: %.0f deliveries/s, %.1f MB/s\n",
               (unsigned long long)run->n.recv_msgs, (unsigned long long)run->n.recv_bytes, pub_s,
               rate(run->n.recv_msgs, pub_s), rate(run->n.recv_bytes, pub_s) / 1e6);
        if (o->scenario == DWB_PACED && rate(run->n.sent_msgs, send_s) < 0.95 * o->rate)
            printf("  warning     the publishers reached %.0f of the %.0f messages/s asked: the "
                   "daemon answered too slowly\n",
                   rate(run->n.sent_msgs, send_s), o->rate);
        printf("  latency     publish to receive: ");
        print_quantiles(h);
        printf(" (%llu samples)\n", (unsigned long long)h->count);
        if (o->marks)
            print_marked(run);
        print_cpu(run, "publishing", DWB_CPU_PUBLISH, DWB_CPU_END, run->n.recv_msgs, "delivery");
        printf("  checks      missing %llu, extra %llu, duplicate %llu, out-of-order %llu, "
               "malformed %llu, misrouted %llu\n",
               (unsigned long long)missing, (unsigned long long)extra,
               (unsigned long long)run->n.dup, (unsigned long long)run->n.ooo,
               (unsigned long long)run->n.malformed, (unsigned long long)run->n.misrouted);
    }
    if (replay) {
        printf("  replayed    %llu messages, %llu bytes in %.3f s from the first connect to the "
               "last one: %.0f messages/s, %.1f MB/s\n",
               (unsigned long long)run->n.recv_msgs, (unsigned long long)run->n.recv_bytes,
               replay_s, rate(run->n.recv_msgs, replay_s), rate(run->n.recv_bytes, replay_s) / 1e6);
        printf("  caught up   %llu of %u connections; connect() to the last message: min %.0f us, "
               "p50 %.0f us, p99 %.0f us, max %.0f us\n",
               (unsigned long long)run->n.caught_up, o->conns, us(h->count ? h->min : 0),
               us(dwb_hist_quantile(h, 0.5)), us(dwb_hist_quantile(h, 0.99)),
               us(h->count ? h->max : 0));
        print_cpu(run, "set-up", DWB_CPU_SETUP, DWB_CPU_CONNECT, run->n.stored, "message");
        print_cpu(run, "replay", DWB_CPU_CONNECT, DWB_CPU_END, run->n.recv_msgs, "message");
        printf("  checks      missing %llu, extra %llu, duplicate %llu, out-of-order %llu, outside "
               "(last_seq, welcome last_seq] %llu, wrong message %llu, welcome last_seq wrong "
               "%llu, not recovered %llu, malformed %llu, misrouted %llu\n",
               (unsigned long long)missing, (unsigned long long)extra,
               (unsigned long long)run->n.dup, (unsigned long long)run->n.ooo,
               (unsigned long long)run->n.unexpected_seq, (unsigned long long)run->n.wrong_message,
               (unsigned long long)run->n.welcome_bad, (unsigned long long)run->n.not_recovered,
               (unsigned long long)run->n.malformed, (unsigned long long)run->n.misrouted);
    }
    if (o->scenario == DWB_IDLE) {
        printf("  server rss  before %ld KiB, after %ld KiB with %u connections: %.0f bytes per "
               "connection%s\n",
               run->rss_before_kb, run->rss_after_kb, run->rss_conns, rss_per_conn,
               o->npids > 1 ? " (summed over the processes given)" : "");
        fputs(run->sockstat, stdout);
    }
    printf("  connections lost %llu, closed by the server %llu (last code %u), protocol errors "
           "%llu, error messages %llu, pings answered %llu\n",
           (unsigned long long)run->n.lost, (unsigned long long)run->n.server_closes,
           run->n.last_close_code, (unsigned long long)run->n.ws_errors,
           (unsigned long long)run->n.error_msgs, (unsigned long long)run->n.pings);
    if (run->first_error[0])
        printf("  first error %s\n", run->first_error);
    printf("  result      %s%s%s%s\n", complete ? "COMPLETE" : "INCOMPLETE",
           run->timed_out ? " (hard timeout)" : "", run->interrupted ? " (interrupted)" : "",
           run->aborted ? " (aborted)" : "");

    printf("{\"bench\":\"%s\",\"server\":\"%s\",\"scenario\":\"%s\",\"connections\":%u,"
           "\"sources\":%u,\"publishers\":%u,\"publish_mode\":\"%s\",\"in_flight\":%u,"
           "\"W\":%u,\"batch\":%u,\"msg_size\":%u,\"tls\":%s,",
           DWB_NAME, dwb_server_name(o->server), dwb_scenario_name(o->scenario), o->conns,
           o->sources, publishing || replay ? o->publishers : 0,
           dwb_publish_mode_name(o->publish_mode), o->in_flight, dwb_scenario_window(run), o->batch,
           o->msg_size, o->tls ? "true" : "false");
    printf("\"ports\":[");
    for (unsigned k = 0; k < o->nports; k++)
        printf("%s%u", k ? "," : "", o->ports[k]);
    printf("],\"publish_port\":%u,", o->publish_port);
    if (o->tls && run->tls_version[0])
        printf("\"tls_version\":\"%s\",\"tls_cipher\":\"%s\",\"tls_group\":\"%s\","
               "\"tls_verified\":%s,\"tls_full\":%llu,\"tls_resumed\":%llu,",
               run->tls_version, run->tls_cipher, run->tls_group,
               o->tls_insecure ? "false" : "true", (unsigned long long)run->n.tls_full,
               (unsigned long long)run->n.tls_resumed);
    if (o->scenario == DWB_CHANNELS)
        printf("\"channels\":%u,\"subs_per_conn\":%u,", o->channels, o->subs);
    if (o->scenario == DWB_PACED)
        printf("\"rate\":%.0f,", o->rate);
    if (o->channel) {
        printf("\"channel\":");
        print_json_string(o->channel);
        putchar(',');
    }
    if (o->marks)
        print_json_marked(run);
    if (o->scenario == DWB_TARGETED)
        printf("\"users\":%llu,\"offline\":%llu,", (unsigned long long)o->users,
               (unsigned long long)run->n.offline);
    if (publishing)
        printf("\"publish_per_s\":%.0f,", rate(run->n.sent_msgs, send_s));
    if (replay) {
        printf("\"backlog\":%u,\"last_seq\":%llu,\"user_prefix\":", o->backlog,
               (unsigned long long)o->last_seq);
        print_json_string(o->prefix);
        printf(",\"stored\":%llu,\"setup_s\":%.3f,\"setup_per_s\":%.0f,\"replayed\":%llu,"
               "\"replayed_per_s\":%.0f,\"caught_up\":%llu,\"caught_up_min_us\":%.1f,"
               "\"caught_up_p50_us\":%.1f,"
               "\"caught_up_p99_us\":%.1f,\"caught_up_max_us\":%.1f,\"welcome_bad\":%llu,"
               "\"not_recovered\":%llu,\"unexpected_seq\":%llu,\"wrong_message\":%llu,"
               "\"answer_seq_bad\":%llu,",
               (unsigned long long)run->n.stored, setup_s, rate(run->n.stored, setup_s),
               (unsigned long long)run->n.recv_msgs, rate(run->n.recv_msgs, replay_s),
               (unsigned long long)run->n.caught_up, us(h->count ? h->min : 0),
               us(dwb_hist_quantile(h, 0.5)), us(dwb_hist_quantile(h, 0.99)),
               us(h->count ? h->max : 0), (unsigned long long)run->n.welcome_bad,
               (unsigned long long)run->n.not_recovered, (unsigned long long)run->n.unexpected_seq,
               (unsigned long long)run->n.wrong_message, (unsigned long long)run->n.answer_seq_bad);
        print_json_cpu(run, "setup_server_cpu_ms", DWB_CPU_SETUP, DWB_CPU_CONNECT);
        pub_s = replay_s; /* deliveries_per_s, bytes_per_s, duration_s: the timed window */
    }
    if (replay || publishing) {
        enum dwb_cpu_mark from = replay ? DWB_CPU_CONNECT : DWB_CPU_PUBLISH;

        printf("\"cpu_window_s\":%.3f,\"bench_cpu_ms\":", cpu_window_s(run, from, DWB_CPU_END));
        print_json_ms(cpu_between(run, from, DWB_CPU_END, DWB_MAX_PIDS));
        putchar(',');
        print_json_cpu(run, "server_cpu_ms", from, DWB_CPU_END);
    }
    printf("\"messages\":%llu,\"deliveries\":%llu,\"deliveries_per_s\":%.0f,\"bytes_per_s\":%.0f,",
           (unsigned long long)run->n.sent_msgs, (unsigned long long)run->n.recv_msgs,
           rate(run->n.recv_msgs, pub_s), rate(run->n.recv_bytes, pub_s));
    print_json_quantiles("", h);
    printf("\"connected\":%llu,\"conn_per_s\":%.0f,\"handshake_p50_us\":%.1f,"
           "\"handshake_p99_us\":%.1f,\"handshake_p999_us\":%.1f,",
           (unsigned long long)run->n.connected, rate(run->n.connected, conn_s),
           us(dwb_hist_quantile(&run->hs, 0.5)), us(dwb_hist_quantile(&run->hs, 0.99)),
           us(dwb_hist_quantile(&run->hs, 0.999)));
    if (o->scenario == DWB_IDLE && have_rss)
        printf("\"rss_before_kb\":%ld,\"rss_after_kb\":%ld,\"rss_per_conn_bytes\":%.0f,",
               run->rss_before_kb, run->rss_after_kb, rss_per_conn);
    else if (o->scenario == DWB_IDLE)
        printf("\"rss_per_conn_bytes\":null,");
    if (run->first_error[0]) {
        printf("\"first_error\":");
        print_json_string(run->first_error);
        putchar(',');
    }
    printf("\"missing\":%llu,\"duplicate\":%llu,\"out_of_order\":%llu,\"lost\":%llu,"
           "\"http_errors\":%llu,\"complete\":%s,\"duration_s\":%.3f,\"seed\":%llu}\n",
           (unsigned long long)missing, (unsigned long long)run->n.dup,
           (unsigned long long)run->n.ooo, (unsigned long long)run->n.lost,
           (unsigned long long)run->n.http_errors, complete ? "true" : "false",
           publishing || replay         ? pub_s
           : o->scenario == DWB_CONNECT ? conn_s
                                        : o->settle,
           (unsigned long long)o->seed);
    fflush(stdout);
    return complete;
}
