/*
 * worker — the pool of worker threads that run everything that may take time or block:
 * HTTP publish requests, the monitors' rounds (timer.h) and the trip planner.
 *
 * Jobs are coarse (one per HTTP request or timer tick), so the job queue is a plain
 * mutex + condition variable FIFO; the per-message hot path never goes through it. Every
 * worker is registered with RCU and may call the hub's send functions directly.
 *
 * Synchronization: dw_workers_submit from any thread; start/stop from the main thread.
 */
#ifndef DEALWIRE_WORKER_H
#define DEALWIRE_WORKER_H

struct dw_workers;

/* A job: runs once on a worker thread with the argument it was submitted with. */
typedef void dw_job_fn(void *arg);

/* thread: main. Starts n worker threads. Returns the pool, or NULL (with a log line) when a
 * thread could not be started. */
struct dw_workers *dw_workers_start(unsigned n);

/* thread: any. Queues fn(arg) to run on a worker. Returns 0, or -ESHUTDOWN once the pool is
 * stopping (the job is then not run; the caller still owns arg). */
int dw_workers_submit(struct dw_workers *pool, dw_job_fn *fn, void *arg);

/* thread: main. Runs the jobs already queued, joins every worker and frees the pool. */
void dw_workers_stop(struct dw_workers *pool);

#endif
