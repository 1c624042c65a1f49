/* The link shortener as one Linux process: the original the split program is
 * measured against. Built from the same C service code as the unikernels:
 * the api's HTTP front-end and link logic (services/api), kv's commands,
 * store and log called in-process (host/kv_inprocess.c) instead of over RESP,
 * and the static files served from the same folder with the static service's
 * path rules (services/static/share_path.c, mime.c). One port serves it all. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "cmdline.h"
#include "conn_posix.h"
#include "fs.h"
#include "fs_posix.h"
#include "heap.h"
#include "kv_inprocess.h"
#include "aof.h"
#include "links.h"
#include "share_path.h"
#include "mime.h"
#include "wallclock.h"

int api_start(const struct boot_args *a);   /* services/api/api.c */

#define FILE_MAX (4u << 20)   /* the site's files are small; larger ones get 500 here */

static int site = -1;
static struct kv_server kv = {.name = "original"};

void *heap_alloc(size_t n) { return malloc(n); }
void heap_free(void *p) { free(p); }
void *kv_mem_alloc(size_t n) { return malloc(n); }
void kv_mem_free(void *p, size_t n) { (void)n; free(p); }

int64_t wallclock_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Boot arguments do not exist here: every service key takes its default, but
 * for the api's crash test hook (--crash-hook, see api.c). */
static int crash_hook;
const char *cmdline_value(const char *key) { return crash_hook && !strcmp(key, "crash_hook") ? "yes" : NULL; }
uint32_t cmdline_uint(const char *key, uint32_t min, uint32_t max, uint32_t def)
{
    (void)key, (void)min, (void)max;
    return def;
}
void cmdline_die(const char *what, const char *val)
{
    fprintf(stderr, "error: %s: %s\n", what, val);
    exit(2);
}

static void text(struct api_call *call, int status, const char *msg)
{
    api_reply(call, status, "text/plain; charset=utf-8", msg, (uint32_t)strlen(msg), NULL);
}

/* Paths that are not the API's: files from the site folder, GET and HEAD. */
static void serve_file(struct api_call *call, const struct api_request *rq)
{
    char path[SHARE_PATH_MAX + 16];
    int slash;
    if (strcmp(rq->method, "GET") && strcmp(rq->method, "HEAD")) {
        text(call, 405, "405 Method Not Allowed\n");
        return;
    }
    int status = share_path(rq->path, path, SHARE_PATH_MAX, &slash);
    if (status) {
        text(call, status, status == 400 ? "400 Bad Request\n" : status == 414 ? "414 URI Too Long\n"
                                                                                : "404 Not Found\n");
        return;
    }
    int fd = posix_open_beneath(site, path, O_RDONLY, 0);
    struct stat st;
    if (fd >= 0 && fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        close(fd);
        if (!slash && *path) {
            char location[SHARE_PATH_MAX + 2];
            snprintf(location, sizeof location, "%s/", rq->path);
            api_reply(call, 301, "text/plain", "", 0, location);
            return;
        }
        strcat(path, *path ? "/index.html" : "index.html");
        fd = posix_open_beneath(site, path, O_RDONLY, 0);
    }
    if (fd < 0 || fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        if (fd >= 0)
            close(fd);
        text(call, 404, "404 Not Found\n");
        return;
    }
    if ((uint64_t)st.st_size > FILE_MAX) {
        close(fd);
        text(call, 500, "500 file too large for the original\n");
        return;
    }
    char *body = malloc((size_t)st.st_size + 1);
    ssize_t got = body ? pread(fd, body, (size_t)st.st_size, 0) : -1;
    close(fd);
    if (got != st.st_size) {
        free(body);
        text(call, 500, "500 read error\n");
        return;
    }
    api_reply(call, 200, mime_type(path), body, (uint32_t)got, NULL);
    free(body);
}

int main(int argc, char **argv)
{
    const char *site_dir = NULL, *data_dir = NULL, *fsync_policy = "always";
    int port = 8080;
    static const struct option opts[] = {
        {"port", 1, 0, 'p'}, {"site", 1, 0, 's'}, {"data", 1, 0, 'd'}, {"appendfsync", 1, 0, 'f'},
        {"crash-hook", 0, 0, 'c'}, {0, 0, 0, 0}};
    for (int o; (o = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        switch (o) {
        case 'p': port = atoi(optarg); break;
        case 's': site_dir = optarg; break;
        case 'd': data_dir = optarg; break;
        case 'f': fsync_policy = optarg; break;
        case 'c': crash_hook = 1; break;   /* a test hook: POST /api/crash crashes the process */
        default:
            fprintf(stderr, "usage: %s --site DIR [--data DIR] [--port N] [--appendfsync always|everysec] "
                            "[--crash-hook]\n", argv[0]);
            return 2;
        }
    }
    if (!site_dir || (site = open(site_dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC)) < 0) {
        fprintf(stderr, "error: --site must name a readable folder\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    kv.started_ms = wallclock_ms();
    if (kv_store_init(&kv.store, 256u << 20))
        return 1;
    if (data_dir) {
        int rc = aof_start_on_share(&kv, data_dir, fsync_policy, wallclock_ms());
        if (rc) {
            fprintf(stderr, "error: cannot use the log in %s: %s\n", data_dir, strerror(-rc));
            return 1;
        }
    }
    kv_inprocess_init(&kv, wallclock_ms);
    api_fallback = serve_file;
    struct boot_args args = {.port = (uint16_t)port};
    snprintf(args.name, sizeof args.name, "original");
    if (api_start(&args)) {
        fprintf(stderr, "error: cannot listen on 127.0.0.1:%d\n", port);
        return 1;
    }
    conn_posix_on_turn(kv_inprocess_turn);
    printf("ready service=shortener-original port=%d keys=%u\n", port, kv.store.count);
    fflush(stdout);
    conn_posix_run();
}
