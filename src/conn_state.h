/*
 * conn_state.h — the close lifecycle of a WebSocket connection, as one state and one table of
 * the transitions allowed (as libuv's UV_HANDLE_CLOSING/CLOSED, one field, asserted). Pure: no
 * lws, no connection, so that tests/unit/test_conn_state.c walks the whole table.
 *
 *   OPEN ──peer close──▶ PEER_CLOSED
 *    │ └─────────┬──────────┘
 *    │  flush close / drop close
 *    │           ▼
 *    │   FLUSHING, DROPPING ──(close frame asked for)──┐
 *    │                                                 ▼
 *    └──────────────(hang-up: failed write, stale)──▶ LET_GO ──(lws's CLOSED)──▶ GONE
 *                                       (and from any state but GONE: CLOSED ──▶ GONE)
 *
 * What each state allows, in conn.c: input is taken in OPEN only; the drain
 * writes only in OPEN; WRITEABLE writes in OPEN, PEER_CLOSED and FLUSHING, and sends the close
 * frame from FLUSHING (once flushed) and DROPPING; in LET_GO nothing more comes from us (lws
 * finishes the connection: a close frame already asked for, or a kill on its next pass), and
 * above all no second close. A transition the table refuses changes nothing and says so.
 */
#ifndef DEALWIRE_CONN_STATE_H
#define DEALWIRE_CONN_STATE_H

#include <stdbool.h>

enum dw_conn_state {
    DW_CONN_OPEN,        /* established */
    DW_CONN_PEER_CLOSED, /* the client sent a close frame: lws answers it */
    DW_CONN_FLUSHING,    /* closing with a code once what was queued at the close is written */
    DW_CONN_DROPPING,    /* closing with a code at once, what is queued dropped */
    DW_CONN_LET_GO,      /* the close frame is asked for, or the socket hung up: lws finishes */
    DW_CONN_GONE,        /* lws closed it (LWS_CALLBACK_CLOSED) */
    DW_CONN__STATES
};

enum dw_conn_event {
    DW_CONN_EV_PEER_CLOSE,  /* the client's close frame arrived */
    DW_CONN_EV_FLUSH_CLOSE, /* close with a code after what is queued */
    DW_CONN_EV_DROP_CLOSE,  /* close with a code now, dropping what is queued */
    DW_CONN_EV_LET_GO,      /* the close frame asked for (from WRITEABLE), or a hang-up */
    DW_CONN_EV_CLOSED,      /* lws closed the connection */
    DW_CONN__EVENTS
};

/* The table: the state an event leads to, or DW_CONN_REFUSED. */
#define DW_CONN_REFUSED DW_CONN__STATES
/* clang-format off */
static const unsigned char dw_conn_next[DW_CONN__EVENTS][DW_CONN__STATES] = {
    /* from:                    OPEN                 PEER_CLOSED       FLUSHING          DROPPING          LET_GO            GONE */
    [DW_CONN_EV_PEER_CLOSE]  = {DW_CONN_PEER_CLOSED, DW_CONN_REFUSED,  DW_CONN_REFUSED,  DW_CONN_REFUSED,  DW_CONN_REFUSED,  DW_CONN_REFUSED},
    [DW_CONN_EV_FLUSH_CLOSE] = {DW_CONN_FLUSHING,    DW_CONN_FLUSHING, DW_CONN_REFUSED,  DW_CONN_REFUSED,  DW_CONN_REFUSED,  DW_CONN_REFUSED},
    [DW_CONN_EV_DROP_CLOSE]  = {DW_CONN_DROPPING,    DW_CONN_DROPPING, DW_CONN_REFUSED,  DW_CONN_REFUSED,  DW_CONN_REFUSED,  DW_CONN_REFUSED},
    [DW_CONN_EV_LET_GO]      = {DW_CONN_LET_GO,      DW_CONN_LET_GO,   DW_CONN_LET_GO,   DW_CONN_LET_GO,   DW_CONN_REFUSED,  DW_CONN_REFUSED},
    [DW_CONN_EV_CLOSED]      = {DW_CONN_GONE,        DW_CONN_GONE,     DW_CONN_GONE,     DW_CONN_GONE,     DW_CONN_GONE,     DW_CONN_REFUSED},
};
/* clang-format on */

/* thread: io (the state is the I/O thread's). Applies ev to *state: true and *state moved when
 * the table allows it, false and *state unchanged when it refuses it. */
static inline bool dw_conn_step(enum dw_conn_state *state, enum dw_conn_event ev)
{
    unsigned next = dw_conn_next[ev][*state];

    if (next == DW_CONN_REFUSED)
        return false;
    *state = (enum dw_conn_state)next;
    return true;
}

/* Does a connection in state take the client's messages (and charge them)? Only OPEN: after
 * its close frame a client sends nothing more (RFC 6455 5.5.1), and what it sends anyway could
 * not be answered. */
static inline bool dw_conn_takes_input(enum dw_conn_state state)
{
    return state == DW_CONN_OPEN;
}

#endif
