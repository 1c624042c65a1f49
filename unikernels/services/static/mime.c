/* Content-Type by extension: the types a static site needs, as nginx's
 * mime.types names them; anything else is a download. */
#include <stddef.h>
#include <string.h>
#include "mime.h"

static const struct { const char *ext, *type; } types[] = {
    { "html", "text/html; charset=utf-8" },
    { "htm", "text/html; charset=utf-8" },
    { "css", "text/css; charset=utf-8" },
    { "js", "text/javascript; charset=utf-8" },
    { "mjs", "text/javascript; charset=utf-8" },
    { "json", "application/json" },
    { "txt", "text/plain; charset=utf-8" },
    { "svg", "image/svg+xml" },
    { "png", "image/png" },
    { "jpg", "image/jpeg" },
    { "jpeg", "image/jpeg" },
    { "gif", "image/gif" },
    { "webp", "image/webp" },
    { "ico", "image/x-icon" },
    { "wasm", "application/wasm" },
    { "woff2", "font/woff2" },
    { "woff", "font/woff" },
    { "pdf", "application/pdf" },
    { "xml", "application/xml" },
};

static int ieq(const char *a, const char *b)
{
    for (; *a && *b; a++, b++) {
        char x = *a >= 'A' && *a <= 'Z' ? *a + 32 : *a;
        if (x != *b)
            return 0;
    }
    return !*a && !*b;
}

const char *mime_type(const char *name)
{
    const char *dot = NULL;
    for (const char *p = name; *p; p++) {
        if (*p == '.')
            dot = p;
        else if (*p == '/')
            dot = NULL;   /* a dot in a directory name is no extension */
    }
    if (dot)
        for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
            if (ieq(dot + 1, types[i].ext))
                return types[i].type;
    return "application/octet-stream";
}
