/* Strict HTTP/1.x request parsing (RFC 9112): what is ambiguous is refused
 * rather than guessed (both Content-Length and Transfer-Encoding, differing
 * lengths, folded lines, control characters), since a server that reads a
 * request differently from a proxy in front of it can be smuggled through. */
#include "http_parse.h"

#include <string.h>

static int is_tchar(unsigned char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return 1;
  return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

int http_token_is(const char *s, size_t len, const char *lit) {
  size_t n = strlen(lit);
  if (len != n) return 0;
  for (size_t i = 0; i < n; i++)
    if (lower((unsigned char)s[i]) != lower((unsigned char)lit[i])) return 0;
  return 1;
}

static int refuse(http_head_t *h, int status, const char *why) {
  h->status = status;
  h->error = why;
  return -1;
}

/* The end of the line starting at p (at its CR or LF), or NULL. */
static const char *line_end(const char *p, const char *end) {
  const char *lf = memchr(p, '\n', (size_t)(end - p));
  if (!lf) return NULL;
  return lf > p && lf[-1] == '\r' ? lf - 1 : lf;
}

static const char *next_line(const char *eol) { return *eol == '\r' ? eol + 2 : eol + 1; }

static int parse_request_line(const char *p, const char *eol, http_head_t *h) {
  const char *sp = memchr(p, ' ', (size_t)(eol - p));
  if (!sp || sp == p || sp - p > 32) return refuse(h, 400, "malformed request line: expected METHOD /path HTTP/1.1");
  for (const char *q = p; q < sp; q++)
    if (!is_tchar((unsigned char)*q)) return refuse(h, 400, "malformed request line: bad method");
  h->method = p;
  h->method_len = (size_t)(sp - p);
  const char *target = sp + 1;
  const char *sp2 = memchr(target, ' ', (size_t)(eol - target));
  if (!sp2 || sp2 == target) return refuse(h, 400, "malformed request line: expected METHOD /path HTTP/1.1");
  for (const char *q = target; q < sp2; q++)
    if ((unsigned char)*q <= 0x20 || (unsigned char)*q >= 0x7f)
      return refuse(h, 400, "malformed request line: the target has a control or non-ASCII byte (percent-encode it)");
  if (*target != '/') return refuse(h, 400, "the request target must be a path starting with '/'");
  h->target = target;
  h->target_len = (size_t)(sp2 - target);
  const char *v = sp2 + 1;
  if (eol - v != 8 || memcmp(v, "HTTP/", 5) != 0 || v[5] < '0' || v[5] > '9' || v[6] != '.' || v[7] < '0' || v[7] > '9')
    return refuse(h, 400, "malformed request line: expected HTTP/1.1 at its end");
  if (v[5] != '1') return refuse(h, 505, "HTTP version not supported: use HTTP/1.1 or HTTP/1.0");
  h->minor = v[7] - '0';
  return 0;
}

static int parse_length(const char *v, size_t n, int64_t *out) {
  if (n == 0 || n > 18) return -1;
  int64_t x = 0;
  for (size_t i = 0; i < n; i++) {
    if (v[i] < '0' || v[i] > '9') return -1;
    x = x * 10 + (v[i] - '0');
  }
  *out = x;
  return 0;
}

/* Each comma-separated token of a Connection field. */
static void connection_tokens(const char *v, size_t n, http_head_t *h) {
  size_t i = 0;
  while (i < n) {
    while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) i++;
    size_t start = i;
    while (i < n && v[i] != ',' && v[i] != ' ' && v[i] != '\t') i++;
    if (http_token_is(v + start, i - start, "close")) h->keep_alive = 0;
    if (http_token_is(v + start, i - start, "keep-alive") && h->minor == 0) h->keep_alive = 1;
  }
}

static int interpret_field(http_field_t *f, http_head_t *h) {
  if (http_token_is(f->name, f->name_len, "content-length")) {
    int64_t n;
    if (parse_length(f->value, f->value_len, &n) != 0) return refuse(h, 400, "Content-Length must be a number");
    if (h->content_length >= 0 && h->content_length != n) return refuse(h, 400, "conflicting Content-Length fields");
    h->content_length = n;
  } else if (http_token_is(f->name, f->name_len, "transfer-encoding")) {
    if (h->minor == 0) return refuse(h, 400, "Transfer-Encoding is not allowed in HTTP/1.0");
    if (h->chunked || !http_token_is(f->value, f->value_len, "chunked"))
      return refuse(h, 501, "only the chunked transfer coding is supported");
    h->chunked = 1;
  } else if (http_token_is(f->name, f->name_len, "connection")) {
    connection_tokens(f->value, f->value_len, h);
  } else if (http_token_is(f->name, f->name_len, "expect")) {
    if (!http_token_is(f->value, f->value_len, "100-continue"))
      return refuse(h, 417, "only the 100-continue expectation is supported");
    h->expect_continue = 1;
  }
  return 0;
}

static int parse_field(const char *p, const char *eol, http_head_t *h) {
  if (*p == ' ' || *p == '\t') return refuse(h, 400, "folded header lines are not accepted");
  const char *colon = memchr(p, ':', (size_t)(eol - p));
  if (!colon || colon == p) return refuse(h, 400, "malformed header line: expected 'Name: value'");
  for (const char *q = p; q < colon; q++)
    if (!is_tchar((unsigned char)*q)) return refuse(h, 400, "malformed header name");
  const char *v = colon + 1, *vend = eol;
  while (v < vend && (*v == ' ' || *v == '\t')) v++;
  while (vend > v && (vend[-1] == ' ' || vend[-1] == '\t')) vend--;
  for (const char *q = v; q < vend; q++) {
    unsigned char c = (unsigned char)*q;
    if ((c < 0x20 && c != '\t') || c == 0x7f) return refuse(h, 400, "a header value holds a control character");
  }
  if (h->nfields == HTTP_MAX_HEADERS) return refuse(h, 431, "too many header fields");
  http_field_t *f = &h->fields[h->nfields++];
  f->name = p;
  f->name_len = (size_t)(colon - p);
  f->value = v;
  f->value_len = (size_t)(vend - v);
  return interpret_field(f, h);
}

int http_parse_head(const char *buf, size_t len, http_head_t *h) {
  memset(h, 0, sizeof *h);
  h->content_length = -1;
  const char *p = buf, *end = buf + len;
  while (p < end && (*p == '\r' || *p == '\n')) p++; /* blank lines before a request are ignored */
  if (p < end && !is_tchar((unsigned char)*p)) return refuse(h, 400, "this is not an HTTP request");
  const char *eol = line_end(p, end);
  if (!eol) {
    if (len > HTTP_MAX_LINE) return refuse(h, 414, "the request line is too long (at most 8 KiB)");
    return 0;
  }
  if (eol - buf > HTTP_MAX_LINE) return refuse(h, 414, "the request line is too long (at most 8 KiB)");
  if (parse_request_line(p, eol, h) < 0) return -1;
  h->keep_alive = h->minor >= 1;
  for (p = next_line(eol);; p = next_line(eol)) {
    if (p >= end || !(eol = line_end(p, end))) {
      if (len > HTTP_MAX_HEAD) return refuse(h, 431, "the request head is too large (at most 32 KiB)");
      return 0;
    }
    if (eol - buf > HTTP_MAX_HEAD) return refuse(h, 431, "the request head is too large (at most 32 KiB)");
    if (eol == p) break; /* the blank line */
    if (parse_field(p, eol, h) < 0) return -1;
  }
  if (h->chunked && h->content_length >= 0)
    return refuse(h, 400, "a request may not have both Content-Length and Transfer-Encoding");
  h->head_len = (size_t)(next_line(eol) - buf);
  return 1;
}

/* ---- chunked bodies ---- */

enum { CH_SIZE, CH_EXT, CH_SIZE_LF, CH_DATA, CH_DATA_CR, CH_DATA_LF, CH_TRAILER, CH_TRAILER_LINE, CH_DONE };

static int hex_value(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = lower(c);
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* One byte of framing (everything but chunk data); -1 if malformed. */
static int chunk_frame(http_chunked_t *c, int ch) {
  switch (c->state) {
    case CH_SIZE: {
      int v = hex_value(ch);
      if (v >= 0) {
        if (++c->digits > 15) return -1;
        c->left = c->left * 16 + (uint64_t)v;
      } else if (c->digits == 0) {
        return -1;
      } else if (ch == ';' || ch == ' ' || ch == '\t') {
        c->state = CH_EXT;
      } else if (ch == '\r') {
        c->state = CH_SIZE_LF;
      } else if (ch == '\n') {
        c->state = c->left ? CH_DATA : CH_TRAILER;
      } else {
        return -1;
      }
      return 0;
    }
    case CH_EXT:
      if (ch == '\r') c->state = CH_SIZE_LF;
      if (ch == '\n') c->state = c->left ? CH_DATA : CH_TRAILER;
      return 0;
    case CH_SIZE_LF:
      if (ch != '\n') return -1;
      c->state = c->left ? CH_DATA : CH_TRAILER;
      return 0;
    case CH_DATA_CR:
      if (ch == '\n') {
        c->state = CH_SIZE;
        c->digits = 0;
        return 0;
      }
      if (ch != '\r') return -1;
      c->state = CH_DATA_LF;
      return 0;
    case CH_DATA_LF:
      if (ch != '\n') return -1;
      c->state = CH_SIZE;
      c->digits = 0;
      return 0;
    case CH_TRAILER: /* at the start of a trailer line: a blank one ends the body */
      if (ch == '\n')
        c->state = CH_DONE;
      else if (ch != '\r')
        c->state = CH_TRAILER_LINE;
      return 0;
    case CH_TRAILER_LINE:
      if (ch == '\n') c->state = CH_TRAILER;
      return 0;
    default: return -1;
  }
}

int http_chunked_decode(http_chunked_t *c, const char *in, size_t len, size_t *used,
                        int (*emit)(void *arg, const char *p, size_t n), void *arg) {
  size_t i = 0;
  while (i < len && c->state != CH_DONE) {
    if (c->state == CH_DATA) {
      size_t n = len - i;
      if (n > c->left) n = (size_t)c->left;
      if (!emit(arg, in + i, n)) {
        *used = i;
        return -2;
      }
      i += n;
      c->left -= n;
      if (c->left == 0) c->state = CH_DATA_CR;
      continue;
    }
    if (chunk_frame(c, (unsigned char)in[i++]) < 0) {
      *used = i;
      return -1;
    }
  }
  *used = i;
  return c->state == CH_DONE;
}

size_t http_unescape(char *s, size_t len, int plus_is_space) {
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    int hi, lo;
    if (s[i] == '%' && i + 2 < len && (hi = hex_value((unsigned char)s[i + 1])) >= 0 &&
        (lo = hex_value((unsigned char)s[i + 2])) >= 0) {
      s[o++] = (char)(hi * 16 + lo);
      i += 2;
    } else if (plus_is_space && s[i] == '+') {
      s[o++] = ' ';
    } else {
      s[o++] = s[i];
    }
  }
  return o;
}
