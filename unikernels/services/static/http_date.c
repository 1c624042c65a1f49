/* HTTP dates without a libc: civil date <-> day number by the usual
 * era-based arithmetic (proleptic Gregorian), all in UTC. */
#include <string.h>
#include "http_date.h"

static const char wdays[7][4] = { "Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed" };   /* from 1970-01-01 */
static const char *const long_wdays[7] = { "Monday", "Tuesday", "Wednesday", "Thursday", "Friday",
                                           "Saturday", "Sunday" };
static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };

/* 32-bit arithmetic: the years 0..9999 fit, and the guest has no signed
 * 64-bit division. Years here are never negative, so division is floor. */

/* Days since 1970-01-01 for year y (0..9999), month m (1..12), day d. */
static int32_t days_from_civil(int32_t y, int m, int d)
{
    y -= m <= 2;
    int32_t era = (y >= 0 ? y : y - 399) / 400;
    int32_t yoe = y - era * 400;
    int32_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int32_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* The inverse, for z >= 0 (from 1970 on). */
static void civil_from_days(uint32_t z, int32_t *y, int *m, int *d)
{
    z += 719468;
    uint32_t era = z / 146097, doe = z - era * 146097;
    uint32_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    uint32_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    uint32_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int32_t)(yoe + era * 400) + (*m <= 2);
}

static void put2(char *o, int v) { o[0] = (char)('0' + v / 10); o[1] = (char)('0' + v % 10); }

#define LAST_SECOND 253402300799LL   /* 9999-12-31 23:59:59 */

void http_date_format(int64_t secs, char *o)
{
    if (secs < 0 || secs > LAST_SECOND)
        secs = 0;   /* not representable: the epoch rather than garbage */
    uint32_t days = (uint32_t)((uint64_t)secs / 86400), rem = (uint32_t)((uint64_t)secs % 86400);
    int32_t y;
    int m, d;
    civil_from_days(days, &y, &m, &d);
    memcpy(o, wdays[days % 7], 3);
    memcpy(o + 3, ", ", 2);
    put2(o + 5, d);
    o[7] = ' ';
    memcpy(o + 8, months[m - 1], 3);
    o[11] = ' ';
    put2(o + 12, (int)(y / 100));
    put2(o + 14, (int)(y % 100));
    o[16] = ' ';
    put2(o + 17, (int)(rem / 3600));
    o[19] = ':';
    put2(o + 20, (int)(rem / 60 % 60));
    o[22] = ':';
    put2(o + 23, (int)(rem % 60));
    memcpy(o + 25, " GMT", 5);   /* with the NUL */
}

/* Reads exactly n digits; -1 if any is not one. */
static int digits(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

static int month_of(const char *s)
{
    for (int i = 0; i < 12; i++)
        if (!strncmp(s, months[i], 3))
            return i + 1;
    return 0;
}

/* "HH:MM:SS" */
static int parse_time(const char *s, int *secs)
{
    int h = digits(s, 2), mi = digits(s + 3, 2), se = digits(s + 6, 2);
    if (h < 0 || mi < 0 || se < 0 || s[2] != ':' || s[5] != ':' || h > 23 || mi > 59 || se > 60)
        return -1;
    *secs = h * 3600 + mi * 60 + se;
    return 0;
}

static int days_in_month(int32_t y, int m)
{
    static const int len[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return len[m - 1] + (m == 2 && leap);
}

static int finish(int32_t y, int m, int d, int t, int64_t *out)
{
    if (!m || d < 1 || d > days_in_month(y, m))
        return -1;
    *out = (int64_t)days_from_civil(y, m, d) * 86400 + t;
    return 0;
}

int http_date_parse(const char *s, int64_t *out)
{
    int t, d, m, y;
    size_t n = strlen(s);
    /* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" */
    if (n == 29 && s[3] == ',' && s[4] == ' ' && s[7] == ' ' && s[11] == ' ' && s[16] == ' ' &&
        !strcmp(s + 25, " GMT")) {
        d = digits(s + 5, 2);
        m = month_of(s + 8);
        y = digits(s + 12, 4);
        if (d < 0 || y < 0 || parse_time(s + 17, &t))
            return -1;
        return finish(y, m, d, t, out);
    }
    /* asctime: "Sun Nov  6 08:49:37 1994" */
    if (n == 24 && s[3] == ' ' && s[7] == ' ' && s[10] == ' ' && s[19] == ' ') {
        d = s[8] == ' ' ? digits(s + 9, 1) : digits(s + 8, 2);
        m = month_of(s + 4);
        y = digits(s + 20, 4);
        if (d < 0 || y < 0 || parse_time(s + 11, &t))
            return -1;
        return finish(y, m, d, t, out);
    }
    /* RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT" */
    for (int i = 0; i < 7; i++) {
        size_t wl = strlen(long_wdays[i]);
        if (strncmp(s, long_wdays[i], wl) || n != wl + 24)
            continue;
        const char *r = s + wl;
        if (r[0] != ',' || r[1] != ' ' || r[4] != '-' || r[8] != '-' || r[11] != ' ' || strcmp(r + 20, " GMT"))
            return -1;
        d = digits(r + 2, 2);
        m = month_of(r + 5);
        y = digits(r + 9, 2);
        if (d < 0 || y < 0 || parse_time(r + 12, &t))
            return -1;
        /* two-digit years: the guest has no calendar clock, so a fixed pivot */
        return finish(y < 70 ? 2000 + y : 1900 + y, m, d, t, out);
    }
    return -1;
}
