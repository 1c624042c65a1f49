/* Opening files beneath a directory the way fs.h promises (host/fs_posix.c). */
#ifndef HOST_FS_POSIX_H
#define HOST_FS_POSIX_H
/* Opens `path` ("a/b", "" = top itself) beneath the directory `top`, one
 * component at a time and never through a symlink. An fd, or -errno. */
int posix_open_beneath(int top, const char *path, int flags, int mode);
#endif
