/*
 * readyq — DESIGN: the hand-over from producers to the I/O thread. Producers push a
 * connection's embedded node; the I/O thread splices the whole queue into a private batch
 * (urcu's test_wfcqueue.c pattern) and walks it without touching shared words again.
 */
#include "dealwire/readyq.h"
#include "dealwire/thread.h"

void dw_readyq_init(struct dw_readyq *q)
{
    __cds_wfcq_init(&q->_head, &q->_tail);
}

bool dw_readyq_push(struct dw_readyq *q, struct cds_wfcq_node *node)
{
    cds_wfcq_node_init(node);
    DW_TSAN_RELEASE(node);
    /* cds_wfcq_enqueue returns false when the queue was empty before this node. */
    return !cds_wfcq_enqueue(&q->_head, &q->_tail, node);
}

void dw_readyq_batch_init(struct dw_readyq_batch *batch)
{
    __cds_wfcq_init(&batch->_head, &batch->_tail);
}

void dw_readyq_take_more(struct dw_readyq *q, struct dw_readyq_batch *batch)
{
    __cds_wfcq_splice_blocking(&batch->_head, &batch->_tail, &q->_head, &q->_tail);
}

void dw_readyq_take_all(struct dw_readyq *q, struct dw_readyq_batch *batch)
{
    dw_readyq_batch_init(batch);
    dw_readyq_take_more(q, batch);
}

struct cds_wfcq_node *dw_readyq_batch_next(struct dw_readyq_batch *batch)
{
    struct cds_wfcq_node *node = __cds_wfcq_dequeue_blocking(&batch->_head, &batch->_tail);

    if (node)
        DW_TSAN_ACQUIRE(node);
    return node;
}
