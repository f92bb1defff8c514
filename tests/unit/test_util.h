/*
 * test_util.h — assertions shared by the unit tests. Include after <cmocka.h>.
 */
#ifndef DEALWIRE_TEST_UTIL_H
#define DEALWIRE_TEST_UTIL_H

#include <string.h>

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

#endif
