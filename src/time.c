/*
 * time — DESIGN: the clocks (clock_gettime, in nanoseconds) and the ISO-8601 format of every
 * timestamp the daemon writes. Stateless; any thread.
 */
#include "dealwire/time.h"

#include <stdio.h>
#include <time.h>

void dw_time_format_iso(char out[DW_TIME_ISO_LEN], int64_t realtime_ns)
{
    time_t sec = (time_t)(realtime_ns / DW_NSEC_PER_SEC);
    long usec = (long)((realtime_ns % DW_NSEC_PER_SEC) / DW_NSEC_PER_USEC);
    struct tm tm;
    size_t n;

    gmtime_r(&sec, &tm);
    n = strftime(out, DW_TIME_ISO_LEN, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, DW_TIME_ISO_LEN - n, ".%06ldZ", usec);
}

static int64_t now_ns(clockid_t clock)
{
    struct timespec ts;

    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * DW_NSEC_PER_SEC + ts.tv_nsec;
}

int64_t dw_now_realtime_ns(void)
{
    return now_ns(CLOCK_REALTIME);
}

int64_t dw_now_mono_ns(void)
{
    return now_ns(CLOCK_MONOTONIC);
}
