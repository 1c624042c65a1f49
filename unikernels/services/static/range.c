/* Range: bytes=a-b | a- | -n, one of them. Several ranges would need a
 * multipart body; answering 200 with the whole file is allowed and simpler. */
#include <stddef.h>
#include "range.h"

#define BIG ((uint64_t)1 << 62)   /* numbers saturate here: beyond any file */

static int ows(char c) { return c == ' ' || c == '\t'; }

/* Reads 1+ digits, saturating at BIG; -1 if there is no digit. */
static int read_num(const char **p, uint64_t *out)
{
    const char *s = *p;
    uint64_t v = 0;
    if (*s < '0' || *s > '9')
        return -1;
    for (; *s >= '0' && *s <= '9'; s++)
        v = v >= BIG / 10 ? BIG : v * 10 + (uint64_t)(*s - '0');
    *out = v;
    *p = s;
    return 0;
}

static int lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

enum range_result range_parse(const char *field, uint64_t size, uint64_t *start, uint64_t *len)
{
    const char *p = field;
    while (ows(*p))
        p++;
    static const char unit[] = "bytes";
    for (size_t i = 0; i < sizeof(unit) - 1; i++, p++)
        if (lower(*p) != unit[i])
            return RANGE_NONE;
    while (ows(*p))
        p++;
    if (*p++ != '=')
        return RANGE_NONE;
    while (ows(*p))
        p++;
    uint64_t first = 0, last = 0;
    int has_first = 0, has_last = 0;
    if (!read_num(&p, &first))
        has_first = 1;
    if (*p++ != '-')
        return RANGE_NONE;
    if (!read_num(&p, &last))
        has_last = 1;
    while (ows(*p))
        p++;
    if (*p)
        return RANGE_NONE;   /* several ranges (or junk): the whole file */
    if (!has_first && !has_last)
        return RANGE_NONE;
    if (has_first) {
        if (has_last && last < first)
            return RANGE_NONE;   /* an invalid range-spec: the field is ignored */
        if (first >= size)
            return RANGE_UNSATISFIABLE;
        uint64_t end = has_last && last < size - 1 ? last : size - 1;
        *start = first;
        *len = end - first + 1;
        return RANGE_ONE;
    }
    if (!last || !size)
        return RANGE_UNSATISFIABLE;   /* a suffix of nothing */
    *len = last < size ? last : size;
    *start = size - *len;
    return RANGE_ONE;
}
