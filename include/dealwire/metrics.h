/*
 * metrics — GET /metrics in the Prometheus text format (version 0.0.4), and the counters the
 * worker threads keep for it.
 *
 * The text writer (dw_metrics_buf and the dw_metrics_write_* functions) is what the page is
 * made of: a family's HELP and TYPE lines, then its samples, label values escaped (\\, \" and
 * \n), histograms as cumulative _bucket{le=...} lines ending in le="+Inf", then _sum and
 * _count. It knows nothing of the daemon; metrics.c's dw__metrics_render (server_int.h)
 * fills it on the I/O thread from the counters each thread owns (docs/architecture.md,
 * "Metrics").
 *
 * Synchronization:
 *   dw_metrics_buf, dw_metrics_write_*   one thread at a time (the caller's buffer)
 *   dw_metrics_monitor_round,
 *   dw_metrics_plan                      any thread (relaxed atomic adds, no lock)
 *   dw_metrics_workers_read              any thread (each field read on its own)
 */
#ifndef DEALWIRE_METRICS_H
#define DEALWIRE_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* The Content-Type of GET /metrics. */
#define DW_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* A growing text buffer; zero-initialise it, free data when done. */
struct dw_metrics_buf {
    char *data; /* NUL-terminated once anything was written */
    size_t len, cap;
};

/* thread: the buffer's. Writes the HELP and TYPE lines of a family: name (valid metric name),
 * type ("counter", "gauge" or "histogram"), help (any text: \ and newlines are escaped). */
void dw_metrics_write_family(struct dw_metrics_buf *b, const char *name, const char *type,
                             const char *help);

/* thread: the buffer's. Writes one sample "name{labels} value". labels is NULL or a list of
 * label names and values, NULL-terminated: {"reason", "auth", NULL}; the values are escaped. */
void dw_metrics_write_sample(struct dw_metrics_buf *b, const char *name, const char *const *labels,
                             double value);

/* thread: the buffer's. Writes a histogram's samples: for each of the n bounds (ascending, in
 * the unit of the metric) the cumulative count of counts[0..i] as name_bucket{labels,le=...},
 * then le="+Inf" with counts[n] added (counts has n + 1 entries, each counting the observations
 * above the previous bound and up to its own), then name_sum (sum) and name_count. */
void dw_metrics_write_histogram(struct dw_metrics_buf *b, const char *name,
                                const char *const *labels, const double *bounds, size_t n,
                                const uint64_t *counts, double sum);

/* The index in bounds[0..n-1] of the first bound >= v, or n (the +Inf bucket). */
size_t dw_metrics_bucket(const double *bounds, size_t n, double v);

/* ---- what the worker threads count -------------------------------------------------------- */

/* Monitor rounds (monitor.c), by monitor, and the results a round that ran can have. */
enum dw_metrics_monitor {
    DW_METRICS_MON_HOT_DEALS,
    DW_METRICS_MON_TRENDING,
    DW_METRICS_MON_WATCHES,
    DW_METRICS_MON_DEMO,
    DW_METRICS_MON__COUNT
};
enum dw_metrics_result {
    DW_METRICS_OK,
    DW_METRICS_FAILED,
    DW_METRICS_DB_UNAVAILABLE,
    DW_METRICS__RESULTS
};
/* Trip plans (planner.c), by outcome. */
enum dw_metrics_plan {
    DW_METRICS_PLAN_FOUND,
    DW_METRICS_PLAN_NOT_FOUND,
    DW_METRICS_PLAN_INVALID,
    DW_METRICS_PLAN_FAILED,
    DW_METRICS_PLAN__COUNT
};

/* Bounds of the worker histograms (monitor rounds, trip plans), in seconds. */
#define DW_METRICS_WORK_BOUNDS 10
extern const double dw_metrics_work_bounds[DW_METRICS_WORK_BOUNDS];

/* A histogram any thread may add to: relaxed atomic adds (a worker's work is rare: a round, a
 * plan; the scrape reads each field on its own, so a scrape during an add may see the count
 * one ahead of the sum, never a torn value). */
struct dw_metrics_work_hist {
    _Atomic uint64_t counts[DW_METRICS_WORK_BOUNDS + 1];
    _Atomic uint64_t sum_ns;
};

struct dw_metrics_workers {
    struct dw_metrics_work_hist round[DW_METRICS_MON__COUNT];
    _Atomic uint64_t rounds[DW_METRICS_MON__COUNT][DW_METRICS__RESULTS];
    struct dw_metrics_work_hist plan;
    _Atomic uint64_t plans[DW_METRICS_PLAN__COUNT];
};

/* thread: any. Counts a round of monitor mon that ran (the checks before it passed) with
 * result rc (0, -EAGAIN: database unavailable, else failed) and took ns. */
void dw_metrics_monitor_round(enum dw_metrics_monitor mon, int rc, int64_t ns);

/* thread: any. Counts a trip plan with its outcome and the ns it took. */
void dw_metrics_plan(enum dw_metrics_plan outcome, int64_t ns);

/* thread: any. The process's worker counters (borrowed; read fields with relaxed loads). */
const struct dw_metrics_workers *dw_metrics_workers_read(void);

#endif
