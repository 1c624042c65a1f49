/* The VM's kv_port transport (kv_client.c). */
#ifndef API_KV_CLIENT_H
#define API_KV_CLIENT_H
#include <stdint.h>
struct kv_client_stats { uint32_t batches, connects, timeouts, failures; };
void kv_client_get_stats(struct kv_client_stats *s);
#endif
