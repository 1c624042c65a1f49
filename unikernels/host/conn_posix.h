/* The Linux event loop behind host/conn_posix.c. */
#ifndef HOST_CONN_POSIX_H
#define HOST_CONN_POSIX_H
/* Called once per loop turn, after the network events and before deferred
 * connections resume: where in-process work (kv's batches) is done. It
 * returns non-zero when more is waiting, so the loop does not sleep. */
void conn_posix_on_turn(int (*fn)(void));
/* Runs the loop for ever. */
void conn_posix_run(void);
#endif
