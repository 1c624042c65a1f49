/* include/heap.h in the VM: lwIP's heap (MEM_SIZE), shared with the stack, so
 * services keep what they take from it small and short-lived. */
#include "heap.h"
#include "lwip/mem.h"

void *heap_alloc(size_t n) { return n > 0xFFFF0000u ? NULL : mem_malloc((mem_size_t)n); }
void heap_free(void *p) { mem_free(p); }
