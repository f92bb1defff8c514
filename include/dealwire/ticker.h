/*
 * ticker — a thread of its own that does one database job on a timer, on a store (and so a
 * PostgreSQL session) of its own: the inbox's retention sweeps, the monitor leader's lock.
 *
 * The thread waits for the schema to be up to date (the keeper applies the migrations after
 * the thread starts), then calls tick(st, arg) at once and every period after the end of the
 * previous call. A stop wakes it at once: only a tick in progress delays it, and a long tick
 * can look at dw_ticker_stopping() between its statements. After the last tick, last(st, arg)
 * runs when given (and the schema was ready), then the thread exits.
 */
#ifndef DEALWIRE_TICKER_H
#define DEALWIRE_TICKER_H

#include <stdbool.h>
#include <stdint.h>

struct dw_db;
struct dw_store;
struct dw_ticker;

/* A tick (or the last call): runs on the ticker's thread, with its store. */
typedef void dw_ticker_fn(struct dw_store *st, void *arg);

/* thread: main. Starts the thread named what (for log lines) on db (borrowed until
 * dw_ticker_stop). Returns NULL (with a log line) when it cannot start. */
struct dw_ticker *dw_ticker_start(struct dw_db *db, const char *what, int64_t period_ns,
                                  dw_ticker_fn *tick, dw_ticker_fn *last, void *arg);

/* thread: any. Has dw_ticker_stop been called? */
bool dw_ticker_stopping(const struct dw_ticker *t);

/* thread: the one that started it. Stops and joins the thread, then frees t (NULL: no-op). */
void dw_ticker_stop(struct dw_ticker *t);

#endif
