/* Files from services/<name>/embed/, embedded in that service's image at build time
 * (scripts/embed-static.sh). */
#ifndef UK_EMBED_H
#define UK_EMBED_H
#include <stdint.h>
struct embedded_file {
    const char *name;
    const uint8_t *data;
    uint32_t size;
};
extern const struct embedded_file embedded_files[];   /* ends with name == NULL */
/* The file called `name`, or NULL. */
static inline const struct embedded_file *embedded_file(const char *name)
{
    for (const struct embedded_file *f = embedded_files; f->name; f++)
        if (!__builtin_strcmp(f->name, name))
            return f;
    return 0;
}
#endif
