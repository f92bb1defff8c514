/*
 * thread — the three execution contexts of dealwire and the cheap checks that back the
 * "thread: io / worker / any" line on every public function.
 *
 * DW_ASSERT_THREAD compares a thread-local role set when the thread starts. It is compiled in
 * for debug and sanitizer builds (when NDEBUG is not defined) and costs nothing in release.
 *
 * DW_TSAN_RELEASE / DW_TSAN_ACQUIRE tell ThreadSanitizer about orderings that liburcu provides
 * with its own asm barriers, which TSan cannot see (CONTRIBUTING.md, "Before you send a change").
 * They are no-ops outside TSan builds.
 */
#ifndef DEALWIRE_THREAD_H
#define DEALWIRE_THREAD_H

#include <assert.h>

enum dw_thread_role {
    DW_THREAD_NONE = 0,
    DW_THREAD_MAIN,
    DW_THREAD_IO,
    DW_THREAD_WORKER,
};

/* thread: any. Sets the calling thread's role (once, at thread start). */
void dw_thread_set_role(enum dw_thread_role role);

/* thread: any. Returns the calling thread's role. */
enum dw_thread_role dw_thread_role(void);

#ifdef NDEBUG
#define DW_ASSERT_THREAD(role) ((void)0)
#else
#define DW_ASSERT_THREAD(role) assert(dw_thread_role() == (role))
#endif

#if defined(__SANITIZE_THREAD__)
#define DW_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define DW_TSAN 1
#endif
#endif

#ifdef DW_TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define DW_TSAN_RELEASE(addr) __tsan_release((void *)(addr))
#define DW_TSAN_ACQUIRE(addr) __tsan_acquire((void *)(addr))
#else
#define DW_TSAN_RELEASE(addr) ((void)(addr))
#define DW_TSAN_ACQUIRE(addr) ((void)(addr))
#endif

#endif
