/*
 * worker — DESIGN: N threads take jobs from one FIFO guarded by a mutex and a condition
 * variable. Jobs are per request or per timer tick, never per message, so the lock is far
 * from the hot path. Each worker registers with RCU for its whole life, so a job can read the
 * hub's maps and deliver without further set-up. Stopping drains the queue first: a job that
 * was accepted is run.
 */
#define DW_LOG_MODULE "worker"
#include "dealwire/worker.h"
#include "dealwire/log.h"
#include "dealwire/mem.h"
#include "dealwire/rcu.h"
#include "dealwire/thread.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct job {
    struct job *next;
    dw_job_fn *fn;
    void *arg;
};

struct dw_workers {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct job *head, *tail; /* under lock */
    bool stopping;           /* under lock */
    unsigned nthreads;
    pthread_t threads[];
};

static void *worker_main(void *arg)
{
    struct dw_workers *pool = arg;
    struct job *job;

    dw_thread_set_role(DW_THREAD_WORKER);
    dw_rcu_register();
    for (;;) {
        pthread_mutex_lock(&pool->lock);
        while (!pool->head && !pool->stopping)
            pthread_cond_wait(&pool->cond, &pool->lock);
        job = pool->head;
        if (job) {
            pool->head = job->next;
            if (!pool->head)
                pool->tail = NULL;
        }
        pthread_mutex_unlock(&pool->lock);
        if (!job)
            break; /* stopping and drained */
        job->fn(job->arg);
        free(job);
    }
    dw_rcu_unregister();
    return NULL;
}

struct dw_workers *dw_workers_start(unsigned n)
{
    struct dw_workers *pool = dw_xcalloc(1, sizeof(*pool) + n * sizeof(pthread_t));
    int err;

    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->cond, NULL);
    for (unsigned i = 0; i < n; i++) {
        err = pthread_create(&pool->threads[i], NULL, worker_main, pool);
        if (err) {
            dw_log(DW_LOG_ERROR, "cannot start worker thread %u: %s", i, strerror(err));
            dw_workers_stop(pool);
            return NULL;
        }
        pool->nthreads++;
    }
    dw_log(DW_LOG_INFO, "%u worker threads started", n);
    return pool;
}

int dw_workers_submit(struct dw_workers *pool, dw_job_fn *fn, void *arg)
{
    struct job *job = dw_xmalloc(sizeof(*job));

    job->next = NULL;
    job->fn = fn;
    job->arg = arg;
    pthread_mutex_lock(&pool->lock);
    if (pool->stopping) {
        pthread_mutex_unlock(&pool->lock);
        free(job);
        return -ESHUTDOWN;
    }
    if (pool->tail)
        pool->tail->next = job;
    else
        pool->head = job;
    pool->tail = job;
    pthread_cond_signal(&pool->cond);
    pthread_mutex_unlock(&pool->lock);
    return 0;
}

void dw_workers_stop(struct dw_workers *pool)
{
    if (!pool)
        return;
    pthread_mutex_lock(&pool->lock);
    pool->stopping = true;
    pthread_cond_broadcast(&pool->cond);
    pthread_mutex_unlock(&pool->lock);
    for (unsigned i = 0; i < pool->nthreads; i++)
        pthread_join(pool->threads[i], NULL);
    pthread_mutex_destroy(&pool->lock);
    pthread_cond_destroy(&pool->cond);
    free(pool);
}
