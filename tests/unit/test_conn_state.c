/*
 * test_conn_state — the close lifecycle of a connection (src/conn_state.h): every event from
 * every state, the allowed transitions and the refused ones, checked against a table written
 * here from the lifecycle's rules rather than copied from the header; then the paths a
 * connection really takes, and that nothing is closed or let go twice.
 */
#include "../../src/conn_state.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "test_util.h"

static const char *const state_names[DW_CONN__STATES] = {
    "OPEN", "PEER_CLOSED", "FLUSHING", "DROPPING", "LET_GO", "GONE",
};

/* The rules, in words, as a function: what ev does from st (DW_CONN_REFUSED when nothing). */
static unsigned expected(enum dw_conn_state st, enum dw_conn_event ev)
{
    bool open = st == DW_CONN_OPEN || st == DW_CONN_PEER_CLOSED;

    switch (ev) {
    case DW_CONN_EV_PEER_CLOSE: /* only an open connection notes it; a closing one goes on */
        return st == DW_CONN_OPEN ? DW_CONN_PEER_CLOSED : DW_CONN_REFUSED;
    case DW_CONN_EV_FLUSH_CLOSE: /* a close starts once, from open */
        return open ? DW_CONN_FLUSHING : DW_CONN_REFUSED;
    case DW_CONN_EV_DROP_CLOSE:
        return open ? DW_CONN_DROPPING : DW_CONN_REFUSED;
    case DW_CONN_EV_LET_GO: /* once, and never after lws closed it */
        return st == DW_CONN_LET_GO || st == DW_CONN_GONE ? DW_CONN_REFUSED : DW_CONN_LET_GO;
    case DW_CONN_EV_CLOSED: /* lws closes a connection once */
        return st == DW_CONN_GONE ? DW_CONN_REFUSED : DW_CONN_GONE;
    default:
        fail_msg("unknown event %d", (int)ev);
        return DW_CONN_REFUSED;
    }
}

static void test_every_event_from_every_state(void **state)
{
    unsigned allowed = 0, refused = 0;

    (void)state;
    for (unsigned st = 0; st < DW_CONN__STATES; st++) {
        for (unsigned ev = 0; ev < DW_CONN__EVENTS; ev++) {
            enum dw_conn_state s = (enum dw_conn_state)st;
            unsigned want = expected(s, (enum dw_conn_event)ev);
            bool ok = dw_conn_step(&s, (enum dw_conn_event)ev);

            if (want == DW_CONN_REFUSED) {
                if (ok || s != st)
                    fail_msg("event %u from %s: allowed (now %s), must be refused", ev,
                             state_names[st], state_names[s]);
                refused++;
            } else {
                if (!ok || (unsigned)s != want)
                    fail_msg("event %u from %s: %s, expected %s", ev, state_names[st],
                             ok ? state_names[s] : "refused", state_names[want]);
                allowed++;
            }
        }
    }
    assert_int_equal(allowed, 14);
    assert_int_equal(refused, 16);
}

/* Steps through evs from OPEN, each expected to be allowed; returns the state reached. */
static enum dw_conn_state walk(const enum dw_conn_event *evs, size_t n)
{
    enum dw_conn_state s = DW_CONN_OPEN;

    for (size_t i = 0; i < n; i++)
        assert_true(dw_conn_step(&s, evs[i]));
    return s;
}

static void test_the_paths_a_connection_takes(void **state)
{
    /* Shutdown: 1001 after the queue, the close frame, lws's close. */
    static const enum dw_conn_event flushed[] = {DW_CONN_EV_FLUSH_CLOSE, DW_CONN_EV_LET_GO,
                                                 DW_CONN_EV_CLOSED};
    /* A slow consumer: 1008 at once. */
    static const enum dw_conn_event dropped[] = {DW_CONN_EV_DROP_CLOSE, DW_CONN_EV_LET_GO,
                                                 DW_CONN_EV_CLOSED};
    /* A failed write or a stale client: hung up. */
    static const enum dw_conn_event hung_up[] = {DW_CONN_EV_LET_GO, DW_CONN_EV_CLOSED};
    /* The client closes; we shut down before lws is done with it. */
    static const enum dw_conn_event peer[] = {DW_CONN_EV_PEER_CLOSE, DW_CONN_EV_FLUSH_CLOSE,
                                              DW_CONN_EV_LET_GO, DW_CONN_EV_CLOSED};
    /* A connection reset: lws closes it from any state. */
    static const enum dw_conn_event reset[] = {DW_CONN_EV_CLOSED};

    (void)state;
    assert_int_equal(walk(flushed, 3), DW_CONN_GONE);
    assert_int_equal(walk(dropped, 3), DW_CONN_GONE);
    assert_int_equal(walk(hung_up, 2), DW_CONN_GONE);
    assert_int_equal(walk(peer, 4), DW_CONN_GONE);
    assert_int_equal(walk(reset, 1), DW_CONN_GONE);
}

static void test_never_closed_or_let_go_twice(void **state)
{
    enum dw_conn_state s = DW_CONN_OPEN;

    (void)state;
    assert_true(dw_conn_step(&s, DW_CONN_EV_FLUSH_CLOSE));
    /* A second close of either kind (a flood while flushing, the token's end, shutdown). */
    assert_false(dw_conn_step(&s, DW_CONN_EV_FLUSH_CLOSE));
    assert_false(dw_conn_step(&s, DW_CONN_EV_DROP_CLOSE));
    assert_int_equal(s, DW_CONN_FLUSHING);
    /* The client's close frame while we flush changes nothing: lws answers it. */
    assert_false(dw_conn_step(&s, DW_CONN_EV_PEER_CLOSE));
    assert_true(dw_conn_step(&s, DW_CONN_EV_LET_GO));
    /* A WRITEABLE, a stale sweep or a failed write after that: nothing more from us. */
    assert_false(dw_conn_step(&s, DW_CONN_EV_LET_GO));
    assert_false(dw_conn_step(&s, DW_CONN_EV_DROP_CLOSE));
    assert_true(dw_conn_step(&s, DW_CONN_EV_CLOSED));
    assert_false(dw_conn_step(&s, DW_CONN_EV_CLOSED));
    assert_int_equal(s, DW_CONN_GONE);
}

static void test_what_each_state_allows(void **state)
{
    (void)state;
    for (unsigned st = 0; st < DW_CONN__STATES; st++) {
        bool input = st == DW_CONN_OPEN;

        assert_int_equal(dw_conn_takes_input((enum dw_conn_state)st), input);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_event_from_every_state),
        cmocka_unit_test(test_the_paths_a_connection_takes),
        cmocka_unit_test(test_never_closed_or_let_go_twice),
        cmocka_unit_test(test_what_each_state_allows),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
