/*
 * server — the I/O thread: the lws context, the WebSocket endpoint /ws/events, the HTTP API
 * on the same port, the heartbeat and the graceful shutdown. It owns the hub and the worker
 * pool for its lifetime.
 *
 * Only the thread that called dw_server_new() (the I/O thread) calls lws, with the one
 * exception lws allows: lws_cancel_service(), which the hub's wake-up (when a producer queues
 * for a connection that was idle), dw_server_reload_tls() and dw_server_stop() use from any
 * thread.
 */
#ifndef DEALWIRE_SERVER_H
#define DEALWIRE_SERVER_H

#include <stdbool.h>

struct dw_auth;
struct dw_bus;
struct dw_bus_op;
struct dw_config;
struct dw_server;
struct dw_hub;
struct dw_workers;

/* thread: io (becomes the I/O thread). Creates the hub, starts the workers and the lws
 * context listening on cfg's host and port (with TLS when cfg names a certificate). cfg and
 * auth (who may connect) are borrowed for the server's lifetime. Returns the server, or NULL
 * after logging why (e.g. the port is taken). */
struct dw_server *dw_server_new(const struct dw_config *cfg, const struct dw_auth *auth);

/* thread: io. Serves until dw_server_stop(), then shuts down gracefully: refuses new
 * connections, flushes outboxes, sends close 1001 to every client, waits up to the shutdown
 * timeout. Returns 0, or -1 on a fatal service error. */
int dw_server_run(struct dw_server *srv);

/* thread: any (async-signal context excluded). Asks dw_server_run() to shut down. */
void dw_server_stop(struct dw_server *srv);

/* thread: any (async-signal context excluded). Asks the I/O thread to load the TLS
 * certificate and key files again (SIGHUP); open connections keep theirs. */
void dw_server_reload_tls(struct dw_server *srv);

/* thread: io, after dw_server_run() returned. Destroys the lws context, stops the workers and
 * frees everything. dw_server_run() can return while the thread that asked it to stop is still
 * inside dw_server_stop() or dw_server_reload_tls() (they wake lws after setting their flag):
 * the caller joins or otherwise waits for every such thread first (main.c joins its signal
 * thread). */
void dw_server_free(struct dw_server *srv);

/* thread: io, before dw_server_run(). Makes /readyz report the database's readiness from
 * health (borrowed; it must outlive the server). Without it /readyz reports no database. */
struct dw_store_health;
void dw_server_set_db_health(struct dw_server *srv, const struct dw_store_health *health);

/* thread: io, before dw_server_run(). Gives the HTTP jobs that need the database (the trip
 * planner) db (borrowed; it must outlive the server), and starts the durable inbox on it
 * (inbox.h), which dw_server_free() stops. Without it they answer 503 and critical messages
 * are not stored. Returns 0, or -EAGAIN (logged) when the inbox's thread cannot start. */
struct dw_db;
int dw_server_set_db(struct dw_server *srv, struct dw_db *db);

/* thread: main, before dw_server_run. Gives the server the nodes' bus (--redis): the hub
 * sends to it, and dw_server_free stops it once nothing sends any more. */
void dw_server_set_bus(struct dw_server *srv, struct dw_bus *bus);

/* thread: any (the bus's hook, bus.h; srv_arg: the server). Asks the I/O thread to catch
 * every connection up from the durable inbox: this node may have missed messages. */
void dw_server_catch_up(void *srv_arg);

/* thread: any (the bus's hook, bus.h; srv_arg: the server). Hands another node's operator
 * action (op, copied) to the I/O thread, which does it as a request here would (operator.c,
 * where it is defined). False when DW_OPS_MAX wait already: it is dropped. */
bool dw_server_operator_heard(void *srv_arg, const struct dw_bus_op *op);

/* thread: any. The durable inbox (NULL without a database). Borrowed for the server's
 * lifetime. */
struct dw_inbox;
struct dw_inbox *dw_server_inbox(struct dw_server *srv);

/* thread: any. This node's name, "host:port" (leader.h). Borrowed for the server's
 * lifetime. */
const char *dw_server_node(const struct dw_server *srv);

/* thread: any. The hub, for producers. Borrowed for the server's lifetime. */
struct dw_hub *dw_server_hub(struct dw_server *srv);

/* thread: any. The worker pool. Borrowed for the server's lifetime. */
struct dw_workers *dw_server_workers(struct dw_server *srv);

#endif
