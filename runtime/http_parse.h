/* A strict HTTP/1.x request parser for the node's server: the request head
 * (request line and header fields) and chunked request bodies.  Nothing is
 * allocated; the parsed head points into the caller's buffer. */
#ifndef AITBC_HTTP_PARSE_H
#define AITBC_HTTP_PARSE_H

#include <stddef.h>
#include <stdint.h>

#define HTTP_MAX_LINE 8192   /* request line; 414 beyond */
#define HTTP_MAX_HEAD 32768  /* request line and header fields; 431 beyond */
#define HTTP_MAX_HEADERS 100 /* header fields; 431 beyond */

typedef struct {
  const char *name, *value;
  size_t name_len, value_len;
} http_field_t;

typedef struct {
  const char *method, *target;
  size_t method_len, target_len;
  int minor; /* HTTP/1.minor */
  http_field_t fields[HTTP_MAX_HEADERS];
  int nfields;
  size_t head_len;        /* bytes of the head, blank line included */
  int64_t content_length; /* -1: none given */
  int chunked, keep_alive, expect_continue;
  int status;        /* on error: the status to answer */
  const char *error; /* on error: why, for the client */
} http_head_t;

/* 1: a complete head was parsed; 0: more bytes are needed; -1: refused
 * (h->status and h->error say how to answer). */
int http_parse_head(const char *buf, size_t len, http_head_t *h);

/* Incremental chunked transfer-coding decoder. */
typedef struct {
  int state;
  uint64_t left; /* bytes left in the current chunk */
  int digits;
} http_chunked_t;

/* Decodes in[0..len): payload bytes are appended through emit(arg, p, n)
 * (which returns 0 to refuse, e.g. past the size limit); *used is set to
 * the bytes consumed.  Returns 1 at the end of the body, 0 if more input is
 * needed, -1 on malformed input, -2 when emit refused. */
int http_chunked_decode(http_chunked_t *c, const char *in, size_t len, size_t *used,
                        int (*emit)(void *arg, const char *p, size_t n), void *arg);

/* Percent-decodes s[0..len) in place ('+' as a space when plus_is_space);
 * returns the new length.  Invalid escapes are kept as they are. */
size_t http_unescape(char *s, size_t len, int plus_is_space);

/* Case-insensitive comparison of a field name or token with a C string. */
int http_token_is(const char *s, size_t len, const char *lit);

#endif
