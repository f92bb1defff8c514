/*
 * thread — DESIGN: a thread-local role set at thread start, read by DW_ASSERT_THREAD.
 */
#include "dealwire/thread.h"

static _Thread_local enum dw_thread_role role;

void dw_thread_set_role(enum dw_thread_role r)
{
    role = r;
}

enum dw_thread_role dw_thread_role(void)
{
    return role;
}
