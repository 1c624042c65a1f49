/* Error numbers, Linux's values: 9P2000.L's Rlerror carries them as they are,
 * so an error from the host's file system reaches a service unchanged. */
#ifndef UK_ERRNO_H
#define UK_ERRNO_H
#define EPERM 1
#define ENOENT 2
#define EIO 5
#define EBADF 9
#define ENOMEM 12
#define EACCES 13
#define EFAULT 14
#define EBUSY 16
#define EEXIST 17
#define ENOTDIR 20
#define EISDIR 21
#define EINVAL 22
#define EMFILE 24
#define EFBIG 27
#define ENOSPC 28
#define EROFS 30
#define ERANGE 34
#define ENAMETOOLONG 36
#define ENOSYS 38
#define ENOTEMPTY 39
#define ELOOP 40
#define EPROTO 71
#define EMSGSIZE 90
#define ENODEV 19
#define ENXIO 6
#define ECONNRESET 104
#define ETIMEDOUT 110
#define ECONNREFUSED 111
#endif
