/*
 * main — DESIGN: the daemon's entry point. It loads the configuration (exit 2 on a bad
 * value), blocks the shutdown signals in every thread and waits for them in one thread of its
 * own (sigwait, so no handler runs in async-signal context), and runs the server on the main
 * thread, which becomes the I/O thread. Exit codes: 0 after a clean shutdown, 1 on a runtime
 * failure, 2 on bad configuration.
 *
 * With --db, the database keeper (db.h) runs beside the server: it applies the migrations in
 * the background, so the hub serves while the database is unreachable; a migration the
 * server refuses stops the daemon with exit code 1. The monitors (monitor.h) run on the
 * workers from then on, and are stopped before the workers and the database.
 */
#define DW_LOG_MODULE "main"
#include "dealwire/auth.h"
#include "dealwire/config.h"
#include "dealwire/db.h"
#include "dealwire/log.h"
#include "dealwire/bus.h"
#include "dealwire/monitor.h"
#include "dealwire/rcu.h"
#include "dealwire/server.h"
#include "dealwire/thread.h"
#include "dealwire/tls.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h> /* environ, with _GNU_SOURCE */

struct signal_waiter {
    sigset_t set;
    struct dw_server *srv;
};

static void *signal_main(void *arg)
{
    struct signal_waiter *w = arg;
    int sig;

    for (;;) {
        if (sigwait(&w->set, &sig) != 0)
            continue;
        if (sig == SIGUSR1)
            break; /* main asks this thread to end */
        if (sig == SIGHUP) {
            dw_log_event(DW_LOG_INFO, "signal", (DW_LOG_STR("signal", "HUP")),
                         "received SIGHUP, reloading the TLS certificate");
            dw_server_reload_tls(w->srv);
            continue;
        }
        dw_log_event(DW_LOG_INFO, "signal", (DW_LOG_STR("signal", sigabbrev_np(sig))),
                     "received %s, shutting down", strsignal(sig));
        dw_server_stop(w->srv);
    }
    return NULL;
}

/* Every connection is a file: take all the open files the hard limit allows (the default soft
 * limit, 1024 on most systems, would cap the daemon at about a thousand clients). */
static void raise_open_file_limit(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max)
        return;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        dw_log(DW_LOG_WARN, "cannot raise the open-file limit to %llu",
               (unsigned long long)rl.rlim_max);
}

/* Grows the table of file descriptors to the size the daemon will use, now, while the process
 * has one thread. The kernel doubles the table as descriptors are opened, and in a process of
 * several threads every doubling waits for an RCU grace period (expand_fdtable() calls
 * synchronize_rcu()) inside the accept() that needed it: a fresh daemon taking 10,000 clients
 * at once sat idle through eight of them (the connect shape, 10,000 clients with 500
 * attempts in flight: 27,000 connections/s on a fresh daemon against 40,000 on one that had
 * held as many before). The table costs 8 bytes and 2 bits per descriptor. */
static void presize_fd_table(int max_connections)
{
    struct rlimit rl;
    long long top = (long long)max_connections + 256; /* max_connections_default()'s margin */
    int fd, high;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur != RLIM_INFINITY && (rlim_t)top > rl.rlim_cur)
        top = (long long)rl.rlim_cur;
    fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    /* The lowest free descriptor from top - 1 up: the table grows to hold it. */
    high = top > fd + 1 ? fcntl(fd, F_DUPFD_CLOEXEC, (int)(top - 1)) : -1;
    if (high >= 0)
        close(high);
    close(fd);
}

/* The db keeper's way to stop the daemon when the schema cannot be brought up to date. */
static void on_db_fatal(void *srv)
{
    dw_server_stop(srv);
}

int main(int argc, char **argv)
{
    struct dw_config cfg;
    struct signal_waiter waiter;
    struct dw_server *srv = NULL;
    struct dw_db *db = NULL;
    struct dw_monitors *mons = NULL;
    struct dw_auth *auth = NULL;
    char err[512];
    pthread_t signal_thread;
    int rc, exit_code = 2; /* until the configuration is known to be usable */

    rc = dw_config_load(&cfg, argc, argv, environ, stdout, stderr);
    if (rc == DW_CONFIG_EXIT_OK)
        return 0;
    if (rc != 0)
        return 2;
    dw_log_set_level((enum dw_log_level)cfg.log_level);
    dw_log_set_format((enum dw_log_format)cfg.log_format);
    raise_open_file_limit();
    presize_fd_table(cfg.max_connections);
    if (cfg.tls_cert && dw_tls_check_files(cfg.tls_cert, cfg.tls_key, err, sizeof(err)) < 0) {
        fprintf(stderr, "dealwire: --tls-cert/--tls-key: %s\n", err);
        goto out;
    }
    auth = dw_auth_new(&cfg, stderr);
    if (!auth)
        goto out; /* a JWT key that does not load; dw_auth_new() said why */
    db = dw_db_new(&cfg);
    if (cfg.db && !db)
        goto out; /* --db does not parse; dw_db_new() said why */

    /* Blocked before any thread starts, so every thread inherits the mask and only
     * signal_main receives them. */
    sigemptyset(&waiter.set);
    sigaddset(&waiter.set, SIGINT);
    sigaddset(&waiter.set, SIGTERM);
    sigaddset(&waiter.set, SIGUSR1);
    sigaddset(&waiter.set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &waiter.set, NULL);
    signal(SIGPIPE, SIG_IGN);

    dw_thread_set_role(DW_THREAD_IO);
    dw_rcu_register();
    exit_code = 1; /* from here on, failures are at run time */
    dw_log_event(DW_LOG_INFO, "start", (DW_LOG_STR("version", DW_VERSION)), "dealwire %s starting",
                 DW_VERSION);
    srv = dw_server_new(&cfg, auth);
    if (!srv)
        goto out_rcu;
    if (cfg.redis) {
        struct dw_bus_hooks hooks = {
            .catch_up = dw_server_catch_up, .op = dw_server_operator_heard, .arg = srv};
        char why[384];
        struct dw_bus *bus = dw_bus_start(cfg.redis, dw_server_hub(srv), dw_server_node(srv),
                                          &hooks, why, sizeof(why));

        if (!bus) {
            dw_log(DW_LOG_ERROR, "--redis: %s", why);
            exit_code = 2; /* a setting that cannot work, as a bad flag */
            goto out_server;
        }
        dw_server_set_bus(srv, bus);
    }
    waiter.srv = srv;
    if (pthread_create(&signal_thread, NULL, signal_main, &waiter) != 0) {
        dw_log(DW_LOG_ERROR, "cannot start the signal thread");
        goto out_server;
    }

    /* The keeper may call on_db_fatal(srv) until dw_db_stop(); the workers' stores report to
     * db until dw_server_free() has joined them. */
    rc = 0;
    if (db) {
        dw_server_set_db_health(srv, dw_db_health(db));
        rc = dw_server_set_db(srv, db);
    }
    if (rc == 0 && db)
        rc = dw_db_start(db, on_db_fatal, srv);
    if (rc == 0 && db) {
        mons = dw_monitors_start(&cfg, db, dw_server_hub(srv), dw_server_workers(srv));
        rc = mons ? 0 : -1;
    }
    if (rc == 0)
        rc = dw_server_run(srv);
    if (rc == 0 && !dw_db_failed(db))
        exit_code = 0;

    pthread_kill(signal_thread, SIGUSR1);
    pthread_join(signal_thread, NULL);
    dw_monitors_stop(mons); /* its rounds use the workers, the hub and db */
    dw_db_stop(db);
    /* The one way out, for a clean stop and every failure: each label undoes what was done
     * before the failures that jump to it, in the reverse order. */
out_server:
    dw_server_free(srv);
out_rcu:
    dw_db_free(db);
    db = NULL;
    dw_auth_free(auth);
    auth = NULL;
    dw_rcu_unregister();
    if (srv)
        dw_log_event(DW_LOG_INFO, "stopped", (DW_LOG_INT("exit_code", exit_code)), "stopped");
out:
    dw_db_free(db);
    dw_auth_free(auth);
    dw_config_destroy(&cfg);
    return exit_code;
}
