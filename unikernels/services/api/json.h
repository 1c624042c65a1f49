/* The little JSON the api needs: escaping strings out, and reading one string
 * member of a flat object in. */
#ifndef API_JSON_H
#define API_JSON_H
#include <stddef.h>
#include <stdint.h>

/* Appends s as a JSON string (quotes included) to out[*len..cap); 0, or -1 if it does not fit. */
int json_string(char *out, size_t cap, size_t *len, const char *s, size_t n);

/* Finds member `key` of the object in body[0..n) and copies its string value,
 * unescaped (UTF-8), NUL-terminated, into out (cap bytes). Returns its length;
 * -1: not JSON or not a flat object, -2: no such string member, -3: too long. */
long json_member_string(const char *body, size_t n, const char *key, char *out, size_t cap);
#endif
