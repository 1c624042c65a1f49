#ifndef UK_STATIC_MIME_H
#define UK_STATIC_MIME_H
/* Content-Type for a file name, by its extension (case-insensitive);
 * application/octet-stream when unknown. */
const char *mime_type(const char *name);
#endif
