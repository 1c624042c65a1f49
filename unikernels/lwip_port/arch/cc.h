/* lwIP compiler/platform glue for the freestanding 32-bit kernel. */
#ifndef UK_LWIP_CC_H
#define UK_LWIP_CC_H
#include <stdio.h>

#define LWIP_NO_INTTYPES_H 1
#define LWIP_NO_CTYPE_H 1
#define LWIP_NO_UNISTD_H 1
#define LWIP_TIMEVAL_PRIVATE 0
typedef int ssize_t;
#define BYTE_ORDER LITTLE_ENDIAN

#define X8_F  "02x"
#define U16_F "u"
#define S16_F "d"
#define X16_F "x"
#define U32_F "u"
#define S32_F "d"
#define X32_F "x"
#define SZT_F "u"

void panic(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
unsigned int uk_rand(void);

#define LWIP_PLATFORM_DIAG(x) do { printf x; } while (0)
#define LWIP_PLATFORM_ASSERT(x) panic("lwip assertion \"%s\" at %s:%d", x, __FILE__, __LINE__)
#define LWIP_RAND() uk_rand()
#define lwip_htons(x) __builtin_bswap16(x)
#define lwip_htonl(x) __builtin_bswap32(x)
#endif
