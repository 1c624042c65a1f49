/* Memory that comes and goes, for services: lwIP's heap in the VM (lib/heap.c),
 * malloc in a Linux build (host/). NULL when there is none left. */
#ifndef UK_HEAP_H
#define UK_HEAP_H
#include <stddef.h>
void *heap_alloc(size_t n);
void heap_free(void *p);
#endif
