/* Parses `ip=ADDR/PREFIX gw=ADDR port=N name=NAME [service=NAME]` plus the
 * extra keys the image's service declares (kept for cmdline_value()).
 * QEMU prefixes the multiboot command line with the kernel's file name, so
 * words without '=' are skipped. Anything missing or malformed is one clear
 * error line and a non-zero exit: a half-configured backend is worse than none. */
#include <string.h>
#include "kernel.h"
#include "cmdline.h"
#include "services.h"

#define EXTRA_MAX 16

static char line[1024];
static struct { const char *key, *val; } extra[EXTRA_MAX];
static int n_extra;

void cmdline_copy(const char *src)
{
    size_t n = strlen(src);
    if (n >= sizeof(line))
        n = sizeof(line) - 1;
    memcpy(line, src, n);
    line[n] = 0;
}

void cmdline_die(const char *what, const char *val)
{
    printf("error: bad command line: %s%s%s (expected ip=ADDR/PREFIX gw=ADDR port=N "
           "name=NAME [service=NAME] [KEY=VALUE...])\n", what, val ? ": " : "", val ? val : "");
    fatal_exit(1);
}
#define die cmdline_die

static int declared(const struct service *svc, const char *key)
{
    for (const char *const *k = svc->keys; k && *k; k++)
        if (!strcmp(*k, key))
            return 1;
    return 0;
}

const char *cmdline_value(const char *key)
{
    for (int i = 0; i < n_extra; i++)
        if (!strcmp(extra[i].key, key))
            return extra[i].val;
    return NULL;
}

/* Dotted quad to network byte order; stops at end or at `stop`. */
static int parse_ip(const char *s, char stop, uint32_t *out, const char **end)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int n = 0, digits = 0;
        while (*s >= '0' && *s <= '9') {
            n = n * 10 + (*s++ - '0');
            if (++digits > 3 || n > 255)
                return -1;
        }
        if (!digits)
            return -1;
        v |= (uint32_t)n << (8 * i);   /* little-endian host: byte i is octet i */
        if (i < 3 && *s++ != '.')
            return -1;
    }
    if (*s && *s != stop)
        return -1;
    *out = v;
    if (end)
        *end = s;
    return 0;
}

static int parse_uint(const char *s, unsigned max, unsigned *out)
{
    unsigned v = 0;
    if (!*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (unsigned)(*s - '0');
        if (v > max)
            return -1;
    }
    *out = v;
    return 0;
}

uint32_t cmdline_uint(const char *key, uint32_t min, uint32_t max, uint32_t def)
{
    const char *val = cmdline_value(key);
    unsigned v;
    if (!val)
        return def;
    if (parse_uint(val, max, &v) || v < min) {
        static char what[96];
        snprintf(what, sizeof(what), "%s must be %u..%u", key, (unsigned)min, (unsigned)max);
        die(what, val);
    }
    return v;
}

void cmdline_parse(struct boot_args *a, const struct service *svc)
{
    int have_ip = 0, have_gw = 0, have_port = 0, have_name = 0;
    char *p = line;

    memset(a, 0, sizeof(*a));
    n_extra = 0;
    while (*p) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        char *word = p;
        while (*p && *p != ' ')
            p++;
        if (*p)
            *p++ = 0;
        char *eq = strchr(word, '=');
        if (!eq)
            continue;   /* the kernel file name */
        *eq = 0;
        const char *key = word, *val = eq + 1;
        if (!strcmp(key, "ip")) {
            const char *slash;
            unsigned prefix;
            if (parse_ip(val, '/', &a->ip, &slash) || *slash != '/' ||
                parse_uint(slash + 1, 32, &prefix) || prefix == 0)
                die("ip must be ADDR/PREFIX", val);
            a->prefix = (int)prefix;
            uint32_t m = prefix == 32 ? 0xFFFFFFFFu : ~(0xFFFFFFFFu >> prefix);
            a->netmask = __builtin_bswap32(m);
            size_t n = (size_t)(slash - val);
            memcpy(a->ip_str, val, n);
            a->ip_str[n] = 0;
            have_ip = 1;
        } else if (!strcmp(key, "gw")) {
            if (parse_ip(val, 0, &a->gw, NULL))
                die("gw must be an IPv4 address", val);
            have_gw = 1;
        } else if (!strcmp(key, "port")) {
            unsigned port;
            if (parse_uint(val, 65535, &port) || port == 0)
                die("port must be 1..65535", val);
            a->port = (uint16_t)port;
            have_port = 1;
        } else if (!strcmp(key, "name")) {
            size_t n = strlen(val);
            if (n == 0 || n >= sizeof(a->name))
                die("name must be 1..63 characters", val);
            for (size_t i = 0; i < n; i++) {
                char c = val[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '-' || c == '_' || c == '.'))
                    die("name may hold only letters, digits, '-', '_' and '.'", val);
            }
            memcpy(a->name, val, n + 1);
            have_name = 1;
        } else if (!strcmp(key, "service")) {
            if (strcmp(val, svc->name)) {
                static char what[64];
                snprintf(what, sizeof(what), "service must be %s (this image's service)", svc->name);
                die(what, val);
            }
        } else if (declared(svc, key) && !cmdline_value(key)) {
            if (n_extra == EXTRA_MAX)
                die("too many arguments", key);
            extra[n_extra].key = key;
            extra[n_extra].val = val;
            n_extra++;
        } else {
            die(declared(svc, key) ? "argument given twice" : "unknown argument", key);
        }
    }
    if (!have_ip) die("missing ip=", NULL);
    if (!have_gw) die("missing gw=", NULL);
    if (!have_port) die("missing port=", NULL);
    if (!have_name) die("missing name=", NULL);
}
