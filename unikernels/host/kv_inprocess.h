/* kv inside the one-process original (host/kv_inprocess.c). */
#ifndef HOST_KV_INPROCESS_H
#define HOST_KV_INPROCESS_H
#include <stdint.h>
#include "commands.h"
void kv_inprocess_init(struct kv_server *kv, int64_t (*now_ms)(void));
/* Runs the batches submitted since the last turn; non-zero if new ones came meanwhile. */
int kv_inprocess_turn(void);
#endif
