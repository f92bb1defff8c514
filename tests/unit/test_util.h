/*
 * test_util.h — assertions and parsing shared by the unit tests. Every test includes it after
 * <cmocka.h>, for the model of cmocka below.
 */
#ifndef DEALWIRE_TEST_UTIL_H
#define DEALWIRE_TEST_UTIL_H

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/*
 * For clang-tidy's static analyzer only (__clang_analyzer__: the tests as compiled do not
 * change). cmocka 1.1 does not declare that _fail(), and so a failed assertion or fail_msg(),
 * ends the test (it does: a longjmp out of it, or exit), so the analyzer follows every path
 * past one and reports what it finds there: a leak of what the test would have freed, a NULL
 * or an uninitialized output that the assertion excluded. Here a failure ends in abort(),
 * which the analyzer knows does not return, and each assertion the tests use that says
 * something about a value is written as the condition it checks.
 */
#ifdef __clang_analyzer__
#undef fail
#define fail() (_fail(__FILE__, __LINE__), abort())
#undef assert_true
#define assert_true(c) ((c) ? (void)0 : fail())
#undef assert_false
#define assert_false(c) ((c) ? fail() : (void)0)
#undef assert_non_null
#define assert_non_null(c) ((c) ? (void)0 : fail())
#undef assert_null
#define assert_null(c) ((c) ? fail() : (void)0)
#undef assert_int_equal
#define assert_int_equal(a, b)                                                                     \
    (cast_to_largest_integral_type(a) == cast_to_largest_integral_type(b) ? (void)0 : fail())
#undef assert_int_not_equal
#define assert_int_not_equal(a, b)                                                                 \
    (cast_to_largest_integral_type(a) != cast_to_largest_integral_type(b) ? (void)0 : fail())
#undef assert_ptr_equal
#define assert_ptr_equal(a, b) ((const void *)(a) == (const void *)(b) ? (void)0 : fail())
#endif

/* Is s an ISO-8601 UTC time as dw_time_format_iso writes it ("2026-11-26T01:02:03.123456Z")? */
static inline void assert_iso_time(const char *s)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.ddddddZ";

    assert_non_null(s);
    assert_int_equal(strlen(s), sizeof(shape) - 1);
    for (size_t i = 0; i < sizeof(shape) - 1; i++) {
        if (shape[i] == 'd')
            assert_true(s[i] >= '0' && s[i] <= '9');
        else
            assert_int_equal(s[i], shape[i]);
    }
}

/* Reads prefix and then a decimal number at *s into *out, and moves *s past them. False, with
 * *s and *out untouched, when *s does not start so or the number does not fit (strtoul, not
 * sscanf, which does not report an overflow). */
static inline bool scan_ulong(const char **s, const char *prefix, unsigned long *out)
{
    size_t plen = strlen(prefix);
    const char *digits = *s + plen;
    char *end;
    unsigned long v;

    if (strncmp(*s, prefix, plen) != 0 || *digits < '0' || *digits > '9')
        return false;
    errno = 0;
    v = strtoul(digits, &end, 10);
    if (errno == ERANGE)
        return false;
    *out = v;
    *s = end;
    return true;
}

/* The status code of an HTTP/1.1 status line ("HTTP/1.1 200 OK"), -1 when line is not one. */
static inline int http_status_code(const char *line)
{
    unsigned long code;

    if (!scan_ulong(&line, "HTTP/1.1 ", &code) || code < 100 || code > 999 || *line != ' ')
        return -1;
    return (int)code;
}

#endif
