/* aitbc.native.server: an HTTP/1.1 server whose handler is Lua.  One event
 * loop thread (server_io.c) holds every connection; a pool of workers, each
 * with its own Lua state, runs the handler for complete requests.  A handler
 * that must wait (a long poll) does not hold a worker: it answers
 * {suspend = seconds, wake = {keys}} and runs again when sys.notify wakes
 * one of its keys or its time is up.
 *
 *   start{host=, port=, fd=, handler="module", config="string", max_body=,
 *         workers=3 x cores, max_connections=, max_per_address=,
 *         idle_timeout=, head_timeout=, log_queue=}  -> server | nil, err
 *   server:port(), server:stop([grace_seconds]), server:stats()
 *
 * The handler module returns factory(config) -> handle(request) -> response.
 * request  = {method, path, query={}, headers={lower-case}, body, remote,
 *             connected(), resumed="woken"|"timeout"|"shutdown", waited=seconds}
 * response = {status, headers={}, body=string}, or {..., stream=function}
 *            (stream() returns the next chunk, nil at the end), or
 *            {suspend=seconds, wake={"key", ...}}; and after={queue=, seq=}
 *            holds the answer until sys.queue_commit(queue, >= seq).
 * Every error the server itself answers is a JSON error document with a
 * request id; a handler that fails or answers nonsense gets a JSON 500. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "server.h"

#define SERVER_MT "aitbc.server"
#define REQUEST_MT "aitbc.server.request"
#define HANDLE_KEY "aitbc.server.handle"
#define STREAM_BUFFER_MAX (256 * 1024)
#define LOG_LINES_PER_SECOND 50

/* ---- growable buffers ---- */

int sbuf_reserve(sbuf_t *b, size_t extra) {
  if (b->len + extra <= b->cap) return 0;
  size_t cap = b->cap ? b->cap : 1024;
  while (cap < b->len + extra) cap *= 2;
  char *d = realloc(b->data, cap);
  if (!d) return -1;
  b->data = d;
  b->cap = cap;
  return 0;
}

int sbuf_add(sbuf_t *b, const void *p, size_t n) {
  if (sbuf_reserve(b, n) < 0) return -1;
  if (n) memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

int sbuf_addf(sbuf_t *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0 || sbuf_reserve(b, (size_t)n + 1) < 0) return -1;
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
  return 0;
}

void sbuf_free(sbuf_t *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

double server_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- answers made by the server itself ---- */

static const char *reason_phrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 425: return "Too Early";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return status < 300 ? "OK" : status < 400 ? "Redirect" : status < 500 ? "Client Error" : "Server Error";
  }
}

void server_request_id(server_t *srv, char out[17]) {
  unsigned n = atomic_fetch_add(&srv->id_counter, 1);
  snprintf(out, 17, "%08x%08x", srv->id_prefix, n);
}

/* A JSON string literal of s (ASCII messages; other bytes are escaped). */
static void add_json_string(sbuf_t *b, const char *s) {
  sbuf_add(b, "\"", 1);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\')
      sbuf_addf(b, "\\%c", c);
    else if (c < 0x20 || c >= 0x7f)
      sbuf_addf(b, "\\u%04x", c);
    else
      sbuf_add(b, s, 1);
  }
  sbuf_add(b, "\"", 1);
}

/* The node's error document ({"detail", "error": {code, message,
 * request_id, status}}), keys sorted as the JSON encoder sorts them. */
void server_error_response(server_t *srv, sbuf_t *out, int status, const char *code, const char *message,
                           const char *request_id, int close) {
  (void)srv;
  sbuf_t body = {0};
  sbuf_add(&body, "{\"detail\":", 10);
  add_json_string(&body, message);
  sbuf_add(&body, ",\"error\":{\"code\":", 17);
  add_json_string(&body, code);
  sbuf_add(&body, ",\"message\":", 11);
  add_json_string(&body, message);
  sbuf_add(&body, ",\"request_id\":", 14);
  add_json_string(&body, request_id);
  sbuf_addf(&body, ",\"status\":%d}}", status);
  sbuf_addf(out,
            "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nX-Request-ID: %s\r\nContent-Length: %zu\r\n%s\r\n",
            status, reason_phrase(status), request_id, body.len, close ? "Connection: close\r\n" : "");
  sbuf_add(out, body.data, body.len);
  sbuf_free(&body);
}

/* ---- log lines (the node's log queue, else stderr), rate-limited ---- */

static void log_line(server_t *srv, const char *level, const char *msg, int status, const char *remote,
                     const char *request_id, const char *detail) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char when[64];
  snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
           tm.tm_hour, tm.tm_min, tm.tm_sec, (long)(ts.tv_nsec / 1000000) % 1000);
  sbuf_t b = {0};
  sbuf_add(&b, "{\"error\":", 9);
  add_json_string(&b, detail ? detail : "");
  sbuf_add(&b, ",\"level\":", 9);
  add_json_string(&b, level);
  sbuf_add(&b, ",\"msg\":", 7);
  add_json_string(&b, msg);
  sbuf_add(&b, ",\"remote\":", 10);
  add_json_string(&b, remote ? remote : "");
  sbuf_add(&b, ",\"request_id\":", 14);
  add_json_string(&b, request_id ? request_id : "");
  sbuf_addf(&b, ",\"service\":\"http\",\"status\":%d,\"time\":\"%s\"}", status, when);
  if (b.data) {
    if (srv->log_queue && *srv->log_queue)
      aitbc_queue_push(srv->log_queue, b.data, b.len);
    else
      fprintf(stderr, "aitbc server: %.*s\n", (int)b.len, b.data);
  }
  sbuf_free(&b);
}

void server_log(server_t *srv, const char *level, const char *msg, int status, const char *remote,
                const char *request_id, const char *detail) {
  static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
  double now = server_now();
  pthread_mutex_lock(&lock);
  int suppressed = 0, write = 1;
  if (now - srv->log_window >= 1) {
    suppressed = srv->log_suppressed;
    srv->log_window = now;
    srv->log_count = srv->log_suppressed = 0;
  }
  if (++srv->log_count > LOG_LINES_PER_SECOND) {
    srv->log_suppressed++;
    write = 0;
  }
  pthread_mutex_unlock(&lock);
  if (suppressed) {
    char note[80];
    snprintf(note, sizeof note, "%d similar lines were not logged in the last second", suppressed);
    log_line(srv, "warn", "log lines suppressed", 0, "", "", note);
  }
  if (write) log_line(srv, level, msg, status, remote, request_id, detail);
}

/* ---- worker Lua states ---- */

static lua_State *state_create(server_t *srv, char *err, size_t errlen) {
  lua_State *L = luaL_newstate();
  if (!L) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  aitbc_host_init(L);
  lua_getglobal(L, "package");
  lua_pushstring(L, srv->path);
  lua_setfield(L, -2, "path");
  lua_pushstring(L, srv->cpath);
  lua_setfield(L, -2, "cpath");
  lua_pop(L, 1);
  lua_getglobal(L, "require");
  lua_pushstring(L, srv->handler);
  int ok = lua_pcall(L, 1, 1, 0) == LUA_OK && lua_isfunction(L, -1);
  if (ok) {
    lua_pushstring(L, srv->config);
    ok = lua_pcall(L, 1, 1, 0) == LUA_OK && lua_isfunction(L, -1);
  }
  if (!ok) {
    snprintf(err, errlen, "handler %s failed to load: %s", srv->handler,
             lua_isstring(L, -1) ? lua_tostring(L, -1) : "it did not return a function");
    lua_close(L);
    return NULL;
  }
  lua_setfield(L, LUA_REGISTRYINDEX, HANDLE_KEY);
  atomic_fetch_add(&srv->states, 1);
  return L;
}

/* ---- request → Lua (run protected: every push can raise) ---- */

typedef struct {
  conn_t *c;
  int valid; /* only while its handler runs */
} request_handle_t;

/* request.connected() -> false once the client has hung up (a long poll
 * must not claim work for a client that is gone), or the request is over. */
static int l_connected(lua_State *L) {
  request_handle_t *h = luaL_checkudata(L, lua_upvalueindex(1), REQUEST_MT);
  lua_pushboolean(L, h->valid && !atomic_load(&h->c->hung_up));
  return 1;
}

static void push_lower(lua_State *L, const char *s, size_t n) {
  luaL_Buffer b;
  char *p = luaL_buffinitsize(L, &b, n);
  for (size_t i = 0; i < n; i++) p[i] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i]);
  luaL_pushresultsize(&b, n);
}

static void push_unescaped(lua_State *L, const char *s, size_t n, int plus_is_space) {
  luaL_Buffer b;
  char *p = luaL_buffinitsize(L, &b, n);
  memcpy(p, s, n);
  luaL_pushresultsize(&b, http_unescape(p, n, plus_is_space));
}

static void push_query(lua_State *L, const char *q, size_t n) {
  lua_newtable(L);
  const char *end = q + n;
  while (q < end) {
    const char *amp = memchr(q, '&', (size_t)(end - q));
    if (!amp) amp = end;
    const char *eq = memchr(q, '=', (size_t)(amp - q));
    if (amp > q) {
      push_unescaped(L, q, (size_t)((eq ? eq : amp) - q), 1);
      if (eq)
        push_unescaped(L, eq + 1, (size_t)(amp - eq - 1), 1);
      else
        lua_pushliteral(L, "");
      lua_settable(L, -3);
    }
    q = amp + 1;
  }
}

static void push_headers(lua_State *L, const http_head_t *h) {
  lua_createtable(L, 0, h->nfields);
  for (int i = 0; i < h->nfields; i++) {
    const http_field_t *f = &h->fields[i];
    push_lower(L, f->name, f->name_len);
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) == LUA_TSTRING) { /* repeated: joined as a list */
      lua_pushliteral(L, ", ");
      lua_pushlstring(L, f->value, f->value_len);
      lua_concat(L, 3);
    } else {
      lua_pop(L, 1);
      lua_pushlstring(L, f->value, f->value_len);
    }
    lua_rawset(L, -3);
  }
}

/* push_request(handle, head) -> request table; protected. */
static int push_request(lua_State *L) {
  request_handle_t *rh = lua_touserdata(L, 1);
  const http_head_t *h = lua_touserdata(L, 2);
  conn_t *c = rh->c;
  lua_createtable(L, 0, 10);
  lua_pushlstring(L, h->method, h->method_len);
  lua_setfield(L, -2, "method");
  const char *qmark = memchr(h->target, '?', h->target_len);
  size_t path_len = qmark ? (size_t)(qmark - h->target) : h->target_len;
  push_unescaped(L, h->target, path_len, 0);
  lua_setfield(L, -2, "path");
  push_query(L, qmark ? qmark + 1 : "", qmark ? h->target_len - path_len - 1 : 0);
  lua_setfield(L, -2, "query");
  push_headers(L, h);
  lua_setfield(L, -2, "headers");
  if (c->chunked)
    lua_pushlstring(L, c->body.data ? c->body.data : "", c->body.len);
  else
    lua_pushlstring(L, c->in.data + c->body_off, (size_t)c->content_length);
  lua_setfield(L, -2, "body");
  lua_pushstring(L, c->remote);
  lua_setfield(L, -2, "remote");
  lua_pushvalue(L, 1);
  lua_pushcclosure(L, l_connected, 1);
  lua_setfield(L, -2, "connected");
  if (c->resumed) {
    lua_pushstring(L, c->resumed);
    lua_setfield(L, -2, "resumed");
    lua_pushnumber(L, server_now() - c->waiting_since);
    lua_setfield(L, -2, "waited");
  }
  return 1;
}

/* ---- Lua → response (run protected; writes c->out) ---- */

static int valid_header(const char *name, size_t nlen, const char *value, size_t vlen) {
  if (nlen == 0 || nlen > 256 || vlen > 8192) return 0;
  for (size_t i = 0; i < nlen; i++) {
    unsigned char ch = (unsigned char)name[i];
    if (ch <= 0x20 || ch >= 0x7f || ch == ':') return 0;
  }
  for (size_t i = 0; i < vlen; i++) {
    unsigned char ch = (unsigned char)value[i];
    if (ch == '\r' || ch == '\n' || ch == 0) return 0;
  }
  return 1;
}

static int framing_header(const char *name, size_t n) {
  return http_token_is(name, n, "content-length") || http_token_is(name, n, "transfer-encoding") ||
         http_token_is(name, n, "connection");
}

static void add_headers(lua_State *L, sbuf_t *out) {
  if (lua_getfield(L, 1, "headers") == LUA_TNIL) {
    lua_pop(L, 1);
    return;
  }
  luaL_checktype(L, -1, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    size_t nlen, vlen;
    if (lua_type(L, -2) != LUA_TSTRING || (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER))
      luaL_error(L, "response headers must be strings");
    const char *name = lua_tolstring(L, -2, &nlen);
    const char *value = lua_tolstring(L, -1, &vlen);
    if (!valid_header(name, nlen, value, vlen)) luaL_error(L, "response header %s is not a valid header", name);
    if (!framing_header(name, nlen) && (sbuf_add(out, name, nlen) < 0 || sbuf_add(out, ": ", 2) < 0 ||
                                        sbuf_add(out, value, vlen) < 0 || sbuf_add(out, "\r\n", 2) < 0))
      luaL_error(L, "out of memory");
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* {suspend = seconds, wake = {keys}}: the keys, NUL-separated, in c->wake. */
static void take_suspend(lua_State *L, conn_t *c, double seconds) {
  luaL_argcheck(L, seconds > 0 && seconds <= 3600, 1, "suspend must be 0..3600 seconds");
  sbuf_t keys = {0};
  if (lua_getfield(L, 1, "wake") == LUA_TTABLE) {
    for (lua_Integer i = 1; lua_rawgeti(L, -1, i) == LUA_TSTRING; i++) {
      size_t n;
      const char *k = lua_tolstring(L, -1, &n);
      if (n && !memchr(k, 0, n)) sbuf_add(&keys, k, n + 1);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  if (sbuf_add(&keys, "", 1) < 0) {
    sbuf_free(&keys);
    luaL_error(L, "out of memory");
  }
  free(c->wake);
  c->wake = keys.data;
  c->suspend_seconds = seconds;
}

static void take_gate(lua_State *L, conn_t *c) {
  if (lua_getfield(L, 1, "after") != LUA_TTABLE) {
    lua_pop(L, 1);
    return;
  }
  lua_getfield(L, -1, "queue");
  lua_getfield(L, -2, "seq");
  const char *queue = lua_tostring(L, -2);
  lua_Integer seq = lua_tointeger(L, -1);
  if (queue && seq > 0) {
    char *copy = strdup(queue);
    if (!copy) luaL_error(L, "out of memory");
    free(c->gate_queue);
    c->gate_queue = copy;
    c->gate_seq = (uint64_t)seq;
  }
  lua_pop(L, 3);
}

static int read_status(lua_State *L) {
  lua_getfield(L, 1, "status");
  int isint = 0;
  lua_Integer status = lua_isnil(L, -1) ? 200 : lua_tointegerx(L, -1, &isint);
  if (!lua_isnil(L, -1) && !isint) luaL_error(L, "response status must be a whole number 100..599");
  if (status < 100 || status > 599) luaL_error(L, "response status %d is not 100..599", (int)status);
  lua_pop(L, 1);
  return (int)status;
}

/* build_response(resp, handle) -> stream function or nothing; protected. */
static int build_response(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  conn_t *c = ((request_handle_t *)lua_touserdata(L, 2))->c;
  if (lua_getfield(L, 1, "suspend") != LUA_TNIL) {
    take_suspend(L, c, luaL_checknumber(L, -1));
    return 0;
  }
  lua_pop(L, 1);
  int status = read_status(L);
  take_gate(L, c);
  int stream = lua_getfield(L, 1, "stream") == LUA_TFUNCTION;
  sbuf_t *out = &c->out;
  out->len = 0;
  sbuf_addf(out, "HTTP/1.1 %d %s\r\n", status, reason_phrase(status));
  add_headers(L, out);
  int bodiless = status < 200 || status == 204 || status == 304;
  if (stream && !bodiless && c->minor == 0) c->keep_alive = 0; /* HTTP/1.0: the body ends with the connection */
  if (!c->keep_alive)
    sbuf_addf(out, "Connection: close\r\n");
  else if (c->minor == 0)
    sbuf_addf(out, "Connection: keep-alive\r\n");
  if (stream && !bodiless) {
    sbuf_addf(out, c->keep_alive ? "Transfer-Encoding: chunked\r\n\r\n" : "\r\n");
    c->streaming = 1;
    lua_getfield(L, 1, "stream");
    return 1;
  }
  size_t len = 0;
  const char *body = "";
  if (!bodiless && lua_getfield(L, 1, "body") != LUA_TNIL) {
    body = luaL_checklstring(L, -1, &len);
  }
  if (!bodiless) sbuf_addf(out, "Content-Length: %zu\r\n", len);
  if (sbuf_add(out, "\r\n", 2) < 0 || (!c->is_head && !bodiless && sbuf_add(out, body, len) < 0))
    luaL_error(L, "out of memory");
  return 0;
}

/* ---- workers ---- */

static void request_id_of(const http_head_t *h, server_t *srv, char out[65]) {
  for (int i = 0; i < h->nfields; i++) {
    const http_field_t *f = &h->fields[i];
    if (!http_token_is(f->name, f->name_len, "x-request-id") || f->value_len == 0 || f->value_len > 64) continue;
    int ok = 1;
    for (size_t j = 0; j < f->value_len && ok; j++) {
      char ch = f->value[j];
      ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_';
    }
    if (ok) {
      memcpy(out, f->value, f->value_len);
      out[f->value_len] = 0;
      return;
    }
  }
  server_request_id(srv, out);
}

static void answer_internal_error(server_t *srv, conn_t *c, const http_head_t *h, const char *why) {
  char rid[65];
  request_id_of(h, srv, rid);
  c->out.len = 0;
  c->streaming = 0;
  c->suspend_seconds = 0;
  server_error_response(srv, &c->out, 500, "internal", "internal server error", rid, !c->keep_alive);
  server_log(srv, "error", "handler failed", 500, c->remote, rid, why);
}

/* Streams the body: each chunk the function returns is framed and handed
 * to the loop; waits while the loop has plenty still to write. */
static void run_stream(server_t *srv, lua_State *L, conn_t *c) {
  int fn = lua_gettop(L);
  for (;;) {
    lua_pushvalue(L, fn);
    int ok = lua_pcall(L, 0, 1, 0) == LUA_OK;
    size_t len = 0;
    const char *chunk = ok ? lua_tolstring(L, -1, &len) : NULL;
    if (!ok) server_log(srv, "error", "stream failed", 0, c->remote, "", lua_tostring(L, -1));
    pthread_mutex_lock(&srv->stream_lock);
    while (!c->dead && !srv->work_stop && c->out.len - c->out_off > STREAM_BUFFER_MAX)
      pthread_cond_wait(&srv->stream_cond, &srv->stream_lock);
    int end = !chunk || c->dead || srv->work_stop;
    if (!c->dead) {
      if (chunk && len && c->keep_alive) sbuf_addf(&c->out, "%zx\r\n", len);
      if (chunk && len) sbuf_add(&c->out, chunk, len);
      if (chunk && len && c->keep_alive) sbuf_add(&c->out, "\r\n", 2);
      if (end && c->keep_alive) sbuf_add(&c->out, ok ? "0\r\n\r\n" : "", ok ? 5 : 0);
      if (end && !ok) c->close_after = 1; /* a broken stream must not look complete */
      if (end) c->stream_end = 1;
    }
    pthread_mutex_unlock(&srv->stream_lock);
    lua_pop(L, 1);
    if (end) break;
    server_complete(srv, c, 1);
  }
  lua_settop(L, fn - 1);
}

static void handle_request(server_t *srv, lua_State *L, conn_t *c) {
  http_head_t h;
  http_parse_head(c->in.data, c->in.len, &h); /* parsed once already: it is whole and valid */
  c->out.len = c->out_off = 0;
  c->suspend_seconds = 0;
  if (!L) {
    answer_internal_error(srv, c, &h, "the handler's Lua state could not be created");
    return;
  }
  request_handle_t *rh = lua_newuserdatauv(L, sizeof *rh, 0);
  rh->c = c;
  rh->valid = 1;
  luaL_newmetatable(L, REQUEST_MT); /* worker states never load this module */
  lua_setmetatable(L, -2);
  int top = lua_gettop(L);
  lua_getfield(L, LUA_REGISTRYINDEX, HANDLE_KEY);
  lua_pushcfunction(L, push_request);
  lua_pushvalue(L, top);
  lua_pushlightuserdata(L, &h);
  int ok = lua_pcall(L, 2, 1, 0) == LUA_OK && lua_pcall(L, 1, 1, 0) == LUA_OK;
  rh->valid = ok; /* connected() stays usable while a stream runs */
  if (ok) {
    lua_pushcfunction(L, build_response);
    lua_insert(L, -2);
    lua_pushvalue(L, top);
    ok = lua_pcall(L, 2, 1, 0) == LUA_OK;
  }
  if (!ok) {
    answer_internal_error(srv, c, &h, lua_tostring(L, -1) ? lua_tostring(L, -1) : "the handler failed");
  } else if (c->streaming) {
    run_stream(srv, L, c);
  }
  rh->valid = 0;
  lua_settop(L, top - 1);
}

static conn_t *work_take(server_t *srv) {
  pthread_mutex_lock(&srv->work_lock);
  while (!srv->work_head && !srv->work_stop) pthread_cond_wait(&srv->work_cond, &srv->work_lock);
  conn_t *c = srv->work_head;
  if (c) {
    srv->work_head = c->qnext;
    if (!srv->work_head) srv->work_tail = NULL;
  }
  pthread_mutex_unlock(&srv->work_lock);
  return c;
}

void server_dispatch(server_t *srv, conn_t *c) {
  c->worker_owned = 1;
  c->qnext = NULL;
  pthread_mutex_lock(&srv->work_lock);
  if (srv->work_tail)
    srv->work_tail->qnext = c;
  else
    srv->work_head = c;
  srv->work_tail = c;
  pthread_cond_signal(&srv->work_cond);
  pthread_mutex_unlock(&srv->work_lock);
}

typedef struct {
  server_t *srv;
  lua_State *L;
} worker_arg_t;

static void *worker_main(void *p) {
  worker_arg_t *w = p;
  server_t *srv = w->srv;
  lua_State *L = w->L;
  char err[512];
  if (!L && !(L = state_create(srv, err, sizeof err)))
    server_log(srv, "error", "worker failed to start", 0, "", "", err);
  for (conn_t *c; (c = work_take(srv));) {
    handle_request(srv, L, c);
    server_complete(srv, c, 0);
  }
  if (L) lua_close(L);
  free(w);
  return NULL;
}

/* ---- Lua API ---- */

static void server_free(server_t *srv) {
  if (srv->workers_started) {
    pthread_mutex_lock(&srv->work_lock);
    srv->work_stop = 1;
    pthread_cond_broadcast(&srv->work_cond);
    pthread_mutex_unlock(&srv->work_lock);
    pthread_mutex_lock(&srv->stream_lock);
    pthread_cond_broadcast(&srv->stream_cond);
    pthread_mutex_unlock(&srv->stream_lock);
    for (int i = 0; i < srv->workers_started; i++) pthread_join(srv->worker_threads[i], NULL);
    srv->workers_started = 0;
  }
  if (srv->handler) aitbc_unlisten(server_listener, srv);
  server_io_join(srv);
  if (srv->first_state) lua_close(srv->first_state);
  srv->first_state = NULL;
  free(srv->worker_threads);
  free(srv->handler), free(srv->config), free(srv->path), free(srv->cpath), free(srv->log_queue);
  srv->worker_threads = NULL;
  srv->handler = srv->config = srv->path = srv->cpath = srv->log_queue = NULL;
}

static char *opt_strdup(lua_State *L, int idx, const char *key, const char *dflt) {
  lua_getfield(L, idx, key);
  const char *s = luaL_optstring(L, -1, dflt);
  char *copy = s ? strdup(s) : NULL;
  lua_pop(L, 1);
  return copy;
}

static lua_Integer opt_int(lua_State *L, const char *key, lua_Integer dflt, lua_Integer min, lua_Integer max) {
  lua_getfield(L, 1, key);
  lua_Integer v = luaL_optinteger(L, -1, dflt);
  lua_pop(L, 1);
  if (v < min || v > max) luaL_error(L, "%s must be %d..%d", key, (int)min, (int)max);
  return v;
}

static double opt_num(lua_State *L, const char *key, double dflt, double min, double max) {
  lua_getfield(L, 1, key);
  double v = luaL_optnumber(L, -1, dflt);
  lua_pop(L, 1);
  if (!(v >= min && v <= max)) luaL_error(L, "%s must be %f..%f", key, min, max);
  return v;
}

/* As many connections as descriptors allow: the soft limit is raised to the
 * hard one, and some are kept for the database, logs and clients. */
static int connection_capacity(int wanted) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return wanted;
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
  }
  long room = (long)rl.rlim_cur - 128;
  if (rl.rlim_cur == RLIM_INFINITY) return wanted;
  return room < 16 ? 16 : room < wanted ? (int)room : wanted;
}

static void read_options(lua_State *L, server_t *srv) {
  int cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
  /* three workers per core: measured best on 2 cores (2 starves, 8+ only adds switching) */
  srv->workers = (int)opt_int(L, "workers", 3 * (cores > 0 ? cores : 1), 1, 1024);
  srv->max_body = (size_t)opt_int(L, "max_body", 1 << 20, 0, (lua_Integer)1 << 30);
  srv->max_conns = connection_capacity((int)opt_int(L, "max_connections", 16384, 1, 1 << 20));
  srv->max_per_addr = (int)opt_int(L, "max_per_address", 1024, 1, 1 << 20);
  srv->idle_timeout = opt_num(L, "idle_timeout", 15, 0.1, 3600);
  srv->head_timeout = opt_num(L, "head_timeout", 10, 0.1, 3600);
  srv->handler = opt_strdup(L, 1, "handler", NULL);
  srv->config = opt_strdup(L, 1, "config", "");
  srv->log_queue = opt_strdup(L, 1, "log_queue", "");
  lua_getglobal(L, "package");
  srv->path = opt_strdup(L, lua_gettop(L), "path", "");
  srv->cpath = opt_strdup(L, lua_gettop(L), "cpath", "");
  lua_pop(L, 1);
  if (!srv->handler || !srv->config || !srv->log_queue || !srv->path || !srv->cpath) luaL_error(L, "out of memory");
}

static void init_sync(server_t *srv) {
  pthread_mutex_init(&srv->work_lock, NULL);
  pthread_cond_init(&srv->work_cond, NULL);
  pthread_mutex_init(&srv->cq_lock, NULL);
  pthread_mutex_init(&srv->ev_lock, NULL);
  pthread_mutex_init(&srv->stream_lock, NULL);
  pthread_cond_init(&srv->stream_cond, NULL);
}

static int start_workers(server_t *srv) {
  srv->worker_threads = calloc((size_t)srv->workers, sizeof *srv->worker_threads);
  if (!srv->worker_threads) return -1;
  for (int i = 0; i < srv->workers; i++) {
    worker_arg_t *w = malloc(sizeof *w);
    if (!w) return -1;
    w->srv = srv;
    w->L = i == 0 ? srv->first_state : NULL;
    if (pthread_create(&srv->worker_threads[i], NULL, worker_main, w) != 0) {
      free(w);
      return -1;
    }
    if (i == 0) srv->first_state = NULL; /* the worker owns it now */
    srv->workers_started++;
  }
  return 0;
}

static int start_failed(lua_State *L, server_t *srv, const char *err) {
  server_free(srv);
  lua_pushnil(L);
  lua_pushstring(L, err);
  return 2;
}

static int l_start(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  server_t *srv = lua_newuserdatauv(L, sizeof *srv, 0);
  memset(srv, 0, sizeof *srv);
  srv->listen_fd = srv->epoll_fd = srv->wake_fd = -1;
  init_sync(srv);
  luaL_setmetatable(L, SERVER_MT);
  lua_getfield(L, 1, "handler");
  luaL_argcheck(L, lua_isstring(L, -1), 1, "handler (a module name) is required");
  lua_pop(L, 1);
  lua_getfield(L, 1, "port");
  lua_Integer port = luaL_optinteger(L, -1, 0);
  lua_pop(L, 1);
  luaL_argcheck(L, port >= 0 && port <= 65535, 1, "port must be 0..65535");
  lua_getfield(L, 1, "fd"); /* a listening socket this process inherited */
  lua_Integer inherited_fd = luaL_optinteger(L, -1, -1);
  lua_pop(L, 1);
  luaL_argcheck(L, inherited_fd >= -1 && inherited_fd <= INT32_MAX, 1, "fd must be a descriptor number");
  read_options(L, srv);
  lua_getfield(L, 1, "host");
  char host[64];
  snprintf(host, sizeof host, "%s", luaL_optstring(L, -1, "127.0.0.1"));
  lua_pop(L, 1);
  srv->id_prefix = (uint32_t)getpid() * 2654435761u ^ (uint32_t)(server_now() * 1e6);
  char err[512];
  if (!(srv->first_state = state_create(srv, err, sizeof err))) return start_failed(L, srv, err);
  sigset_t block, old; /* the server's threads inherit this mask: signals stay with the main thread */
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  sigaddset(&block, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &block, &old);
  int rc = server_io_start(srv, host, (int)port, (int)inherited_fd, err, sizeof err);
  if (rc == 0 && start_workers(srv) < 0) {
    rc = -1;
    snprintf(err, sizeof err, "cannot start the server's workers");
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc < 0) return start_failed(L, srv, err);
  aitbc_listen(server_listener, srv);
  return 1;
}

static server_t *check_server(lua_State *L) { return luaL_checkudata(L, 1, SERVER_MT); }

static int l_port(lua_State *L) {
  lua_pushinteger(L, check_server(L)->port);
  return 1;
}

static int l_stats(lua_State *L) {
  server_t *srv = check_server(L);
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, atomic_load(&srv->busy));
  lua_setfield(L, -2, "inflight");
  lua_pushinteger(L, atomic_load(&srv->requests));
  lua_setfield(L, -2, "requests");
  lua_pushinteger(L, atomic_load(&srv->states));
  lua_setfield(L, -2, "states");
  lua_pushinteger(L, srv->workers);
  lua_setfield(L, -2, "workers");
  return 1;
}

/* Stops accepting, answers waiting long polls, lets requests in flight
 * finish (up to grace seconds), then closes everything. */
static int l_stop(lua_State *L) {
  server_t *srv = check_server(L);
  double grace = luaL_optnumber(L, 2, 10);
  if (!srv->handler) return 0;
  atomic_store(&srv->stopping, 1);
  server_io_wake(srv);
  struct timespec tick = {0, 5 * 1000 * 1000};
  double until = server_now() + grace;
  nanosleep(&tick, NULL);
  while (atomic_load(&srv->busy) > 0 && server_now() < until) nanosleep(&tick, NULL);
  server_free(srv);
  return 0;
}

static int l_gc(lua_State *L) {
  server_t *srv = check_server(L);
  if (srv->handler) {
    atomic_store(&srv->stopping, 1);
    server_free(srv);
  }
  return 0;
}

int luaopen_aitbc_native_server(lua_State *L) {
  static const luaL_Reg methods[] = {{"port", l_port}, {"stop", l_stop}, {"stats", l_stats}, {NULL, NULL}};
  if (luaL_newmetatable(L, SERVER_MT)) {
    lua_pushcfunction(L, l_gc);
    lua_setfield(L, -2, "__gc");
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  lua_newtable(L);
  lua_pushcfunction(L, l_start);
  lua_setfield(L, -2, "start");
  return 1;
}
