/* The link shortener's logic: routes, validation and kv's data layout. The
 * front-end (api.c in the VM, the original's on Linux) parses HTTP and calls
 * links_start; the answer comes back through api_reply, now or once kv has
 * answered. Data in kv, strings only:
 *   seq            INCR'd per link; a link's code is base62(seq * 2654435761 mod 2^32)
 *   link:<code>    the URL          created:<code>  Unix ms     hits:<code>  INCR'd per redirect
 *   recent:<seq % 10>  the code of one of the 10 newest links
 * The same URL posted twice gets two codes: a link is a record of one request. */
#ifndef API_LINKS_H
#define API_LINKS_H
#include <stdint.h>

#define URL_MAX 2048
#define RECENT 10

struct api_call;   /* the front-end's handle on one HTTP request */

struct api_request {
    const char *method, *path;       /* NUL-terminated; path without the query */
    const char *host;                /* Host header or NULL */
    int https;                       /* X-Forwarded-Proto: https */
    int form;                        /* Content-Type: application/x-www-form-urlencoded */
    const char *body;
    uint32_t body_len;
};

/* Implemented by the front-end: the response (Content-Length is the front-end's). */
void api_reply(struct api_call *call, int status, const char *content_type, const char *body, uint32_t len,
               const char *location);
/* Implemented by the platform: Unix time in ms. */
int64_t api_now_ms(void);

struct link_req;
/* Whether a path is the API's (/api/links..., /r/...). */
int links_owns(const char *path);
/* For other paths, when set (the one-process original serves its static files here). */
extern void (*api_fallback)(struct api_call *call, const struct api_request *rq);
/* Starts a request. Returns NULL when it was answered at once, or the request
 * waiting for kv: the front-end keeps `call` valid until api_reply, or calls
 * links_abandon when the client went away first. */
struct link_req *links_start(struct api_call *call, const struct api_request *req);
void links_abandon(struct link_req *q);

/* In-flight requests at most (each waits for kv); more get 503. */
#define LINKS_INFLIGHT 128
struct links_stats { uint32_t created, redirects, kv_errors, busy; };
void links_get_stats(struct links_stats *s);
#endif
