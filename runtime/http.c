/* aitbc.native.http: an HTTP client over libcurl.
 *   request{method, url, headers, body, timeout, connect_timeout, insecure,
 *           on_data, unix_socket}   -> response | nil, message, kind
 *   request_many{req, req, ...}     -> {response | {error=, kind=}, ...}
 * A response is {status=, headers={lower-case name = value}, body=, time=}.
 * on_data(chunk) streams the body instead (return false to stop); it runs
 * under pcall so a Lua error never unwinds through libcurl, and is re-raised
 * once the transfer is over.  Kinds: connect, resolve, timeout, tls, url,
 * aborted, interrupted, network.  Only http:// and https:// URLs are
 * fetched (libcurl would also read file://, ftp://, …).  unix_socket: the
 * path of a unix socket to connect to instead of the URL's host (a
 * container engine's API); the URL still names the scheme and the path.
 * Every handle and buffer is owned by a userdata (__gc), so a raise at any
 * point leaks nothing, and nothing raises while libcurl is on the C stack. */
#define CURL_DISABLE_TYPECHECK
#include <curl/curl.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "aitbc.h"

#define TRANSFER_MT "aitbc.http.transfer"
#define MULTI_MT "aitbc.http.multi"
#define SHARE_MT "aitbc.http.share"
#define SHARE_KEY "aitbc.http.connection_cache" /* this state's share handle */

/* libcurl (and the ~30 libraries it pulls in) is loaded on first use, not
 * at start-up: relocating them was two thirds of `aitbc --help`'s time. */
/* clang-format off */
#define CURL_FUNCTIONS(X) \
  X(curl_global_init) \
  X(curl_version_info) \
  X(curl_easy_init) \
  X(curl_easy_cleanup) \
  X(curl_easy_setopt) \
  X(curl_easy_perform) \
  X(curl_easy_getinfo) \
  X(curl_easy_strerror) \
  X(curl_slist_append) \
  X(curl_slist_free_all) \
  X(curl_multi_init) \
  X(curl_multi_add_handle) \
  X(curl_multi_remove_handle) \
  X(curl_multi_perform) \
  X(curl_multi_poll) \
  X(curl_multi_info_read) \
  X(curl_multi_cleanup) \
  X(curl_multi_strerror) \
  X(curl_share_init) \
  X(curl_share_setopt) \
  X(curl_share_cleanup)
/* clang-format on */

static struct {
#define X(name) __typeof__(&name) name;
  CURL_FUNCTIONS(X)
#undef X
} curl;
static const char *curl_load_error;

static void curl_load(void) {
  void *lib = dlopen(AITBC_CURL_SONAME, RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    curl_load_error = dlerror();
    return;
  }
#define X(name)                                                  \
  if (!(curl.name = (__typeof__(curl.name))dlsym(lib, #name))) { \
    curl_load_error = "missing symbol " #name;                   \
    return;                                                      \
  }
  CURL_FUNCTIONS(X)
#undef X
  curl.curl_global_init(CURL_GLOBAL_DEFAULT);
}

#define curl_global_init curl.curl_global_init
#define curl_version_info curl.curl_version_info
#define curl_easy_init curl.curl_easy_init
#define curl_easy_cleanup curl.curl_easy_cleanup
#undef curl_easy_setopt /* curl.h wraps these two in macros */
#undef curl_easy_getinfo
#define curl_easy_setopt curl.curl_easy_setopt
#define curl_easy_perform curl.curl_easy_perform
#define curl_easy_getinfo curl.curl_easy_getinfo
#define curl_easy_strerror curl.curl_easy_strerror
#define curl_slist_append curl.curl_slist_append
#define curl_slist_free_all curl.curl_slist_free_all
#define curl_multi_init curl.curl_multi_init
#define curl_multi_add_handle curl.curl_multi_add_handle
#define curl_multi_remove_handle curl.curl_multi_remove_handle
#define curl_multi_perform curl.curl_multi_perform
#define curl_multi_poll curl.curl_multi_poll
#define curl_multi_info_read curl.curl_multi_info_read
#define curl_multi_cleanup curl.curl_multi_cleanup
#define curl_multi_strerror curl.curl_multi_strerror
#define curl_share_init curl.curl_share_init
#undef curl_share_setopt
#define curl_share_setopt curl.curl_share_setopt
#define curl_share_cleanup curl.curl_share_cleanup

typedef struct {
  char *data;
  size_t len, cap;
} growbuf_t;

typedef struct {
  CURL *easy;
  struct curl_slist *headers;
  growbuf_t body, head;
  lua_State *L;
  int on_data;          /* registry ref of the streaming callback, or LUA_NOREF */
  int callback_err;     /* registry slot, reserved up front, for the callback's error */
  int callback_failed;  /* the callback raised: its error is in callback_err */
  int aborted;          /* the callback asked to stop */
  int ignore_interrupt; /* finish even after Ctrl-C (a miner's job in hand) */
  char errbuf[CURL_ERROR_SIZE];
} transfer_t;

static int growbuf_append(growbuf_t *b, const char *p, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n + 1) cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) return -1;
    b->data = d;
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
  return 0;
}

static void transfer_release(lua_State *L, transfer_t *t) {
  if (t->easy) curl_easy_cleanup(t->easy);
  curl_slist_free_all(t->headers);
  free(t->body.data);
  free(t->head.data);
  luaL_unref(L, LUA_REGISTRYINDEX, t->on_data);
  luaL_unref(L, LUA_REGISTRYINDEX, t->callback_err);
  memset(t, 0, sizeof *t);
  t->on_data = t->callback_err = LUA_NOREF;
}

static int transfer_gc(lua_State *L) {
  transfer_release(L, luaL_checkudata(L, 1, TRANSFER_MT));
  return 0;
}

/* Calls on_data(chunk) -> whether to go on.  Runs under lua_pcall: even
 * pushing the chunk can raise (out of memory). */
static int call_on_data(lua_State *L) {
  transfer_t *t = lua_touserdata(L, 1);
  const char *p = lua_touserdata(L, 2);
  size_t len = (size_t)lua_tointeger(L, 3);
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->on_data);
  lua_pushlstring(L, p, len);
  lua_call(L, 1, 1);
  lua_pushboolean(L, !(lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)));
  return 1;
}

/* libcurl's write callback: no Lua call here may raise, so only pushes
 * that cannot allocate happen outside the pcall, and the error is stored
 * into a registry slot reserved when the transfer was built. */
static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  transfer_t *t = ud;
  size_t len = size * n;
  if (t->on_data == LUA_NOREF) return growbuf_append(&t->body, p, len) == 0 ? len : 0;
  lua_State *L = t->L;
  if (!lua_checkstack(L, 4)) return 0; /* a write error: the transfer fails as "network" */
  lua_pushcfunction(L, call_on_data);
  lua_pushlightuserdata(L, t);
  lua_pushlightuserdata(L, p);
  lua_pushinteger(L, (lua_Integer)len);
  if (lua_pcall(L, 3, 1, 0) != LUA_OK) {
    lua_rawseti(L, LUA_REGISTRYINDEX, t->callback_err); /* an existing key: no allocation */
    t->callback_failed = 1;
    return 0;
  }
  int go_on = lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (!go_on) t->aborted = 1;
  return go_on ? len : 0;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
  transfer_t *t = ud;
  size_t len = size * n;
  if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) t->head.len = 0; /* a new response (redirect, 100) */
  return growbuf_append(&t->head, p, len) == 0 ? len : 0;
}

static int on_progress(void *ud, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d) {
  transfer_t *t = ud;
  (void)a, (void)b, (void)c, (void)d;
  return !t->ignore_interrupt && aitbc_interrupted();
}

/* A time limit in seconds -> milliseconds (0: none); a negative, NaN or
 * huge one would be undefined as a long, or silently ignored by libcurl. */
static long opt_millis(lua_State *L, int idx, const char *key, double dflt) {
  lua_getfield(L, idx, key);
  double v = luaL_optnumber(L, -1, dflt);
  lua_pop(L, 1);
  if (!(v >= 0 && v <= 1e9)) luaL_error(L, "%s must be a number of seconds from 0 to 1e9", key);
  return (long)(v * 1000);
}

static void check_setopt(lua_State *L, CURLcode rc, const char *what) {
  if (rc != CURLE_OK) luaL_error(L, "cannot set %s: %s", what, curl_easy_strerror(rc));
}

/* An HTTP token (RFC 9110 5.6.2): what a method or a header name may be. */
static int is_token(const char *s, size_t len) {
  if (len == 0) return 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!(c >= '0' && c <= '9') && !(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z') &&
        !(c && strchr("!#$%&'*+-.^_`|~", c)))
      return 0;
  }
  return 1;
}

static void append_header(lua_State *L, transfer_t *t, const char *line) {
  struct curl_slist *list = curl_slist_append(t->headers, line);
  if (!list) luaL_error(L, "out of memory adding a request header");
  t->headers = list;
}

static void set_headers(lua_State *L, int idx, transfer_t *t) {
  append_header(L, t, "Expect:");
  lua_getfield(L, idx, "headers");
  if (lua_istable(L, -1)) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING) {
        size_t nlen, vlen;
        const char *name = lua_tolstring(L, -2, &nlen), *value = lua_tolstring(L, -1, &vlen);
        if (!is_token(name, nlen))
          luaL_error(L, "a header name is not an HTTP token (no spaces, colons or line breaks)");
        if (strlen(value) != vlen || strpbrk(value, "\r\n"))
          luaL_error(L, "header %s contains a line break or NUL", name);
        append_header(L, t, lua_pushfstring(L, "%s: %s", name, value));
        lua_pop(L, 1);
      }
      lua_pop(L, 1);
    }
  } else if (!lua_isnil(L, -1)) {
    luaL_error(L, "headers must be a table");
  }
  lua_pop(L, 1);
  check_setopt(L, curl_easy_setopt(t->easy, CURLOPT_HTTPHEADER, t->headers), "headers");
}

static void set_method_and_body(lua_State *L, int idx, transfer_t *t) {
  lua_getfield(L, idx, "method");
  size_t mlen;
  const char *method = luaL_optlstring(L, -1, "GET", &mlen);
  if (!is_token(method, mlen)) luaL_error(L, "method is not an HTTP token (e.g. GET, POST; no spaces or line breaks)");
  lua_getfield(L, idx, "body");
  size_t blen = 0;
  const char *body = luaL_optlstring(L, -1, NULL, &blen);
  CURL *e = t->easy;
  if (strcmp(method, "HEAD") == 0)
    check_setopt(L, curl_easy_setopt(e, CURLOPT_NOBODY, 1L), "method");
  else if (strcmp(method, "GET") != 0)
    check_setopt(L, curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method), "method");
  if (body) {
    check_setopt(L, curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen), "body");
    check_setopt(L, curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, body), "body");
    if (strcmp(method, "POST") != 0) check_setopt(L, curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method), "method");
  }
  lua_pop(L, 2);
}

/* Builds a configured transfer from the request table at idx; leaves the
 * transfer userdata on the stack. */
static transfer_t *transfer_new(lua_State *L, int idx) {
  luaL_checktype(L, idx, LUA_TTABLE);
  transfer_t *t = lua_newuserdatauv(L, sizeof *t, 0);
  memset(t, 0, sizeof *t);
  t->on_data = t->callback_err = LUA_NOREF;
  luaL_setmetatable(L, TRANSFER_MT);
  t->L = L;
  t->easy = curl_easy_init();
  if (!t->easy) luaL_error(L, "curl_easy_init failed");
  lua_getfield(L, idx, "url");
  const char *url = lua_tostring(L, -1);
  if (!url) luaL_error(L, "request needs a url");
  check_setopt(L, curl_easy_setopt(t->easy, CURLOPT_URL, url), "url");
  lua_pop(L, 1);
  /* http and https only, redirects included: a URL from a user or an agent
   * must not read local files (file://) or speak other protocols. */
  check_setopt(L, curl_easy_setopt(t->easy, CURLOPT_PROTOCOLS_STR, "http,https"), "protocols");
  check_setopt(L, curl_easy_setopt(t->easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https"), "redirect protocols");
  set_method_and_body(L, idx, t);
  set_headers(L, idx, t);
  check_setopt(L, curl_easy_setopt(t->easy, CURLOPT_TIMEOUT_MS, opt_millis(L, idx, "timeout", 30)), "timeout");
  check_setopt(L, curl_easy_setopt(t->easy, CURLOPT_CONNECTTIMEOUT_MS, opt_millis(L, idx, "connect_timeout", 10)),
               "connect_timeout");
  lua_getfield(L, idx, "unix_socket");
  if (!lua_isnil(L, -1)) {
    size_t plen = 0;
    const char *path = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &plen) : NULL;
    if (!path || plen == 0 || strlen(path) != plen) luaL_error(L, "unix_socket must be a non-empty path without NUL");
    check_setopt(L, curl_easy_setopt(t->easy, CURLOPT_UNIX_SOCKET_PATH, path), "unix_socket");
  }
  lua_pop(L, 1);
  lua_getfield(L, idx, "insecure");
  if (lua_toboolean(L, -1)) {
    curl_easy_setopt(t->easy, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(t->easy, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  lua_getfield(L, idx, "ignore_interrupt");
  t->ignore_interrupt = lua_toboolean(L, -1);
  lua_pop(L, 1);
  lua_getfield(L, idx, "on_data");
  if (lua_isfunction(L, -1)) {
    t->on_data = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushboolean(L, 0); /* the slot on_body fills without allocating */
    t->callback_err = luaL_ref(L, LUA_REGISTRYINDEX);
  } else {
    if (!lua_isnil(L, -1)) luaL_error(L, "on_data must be a function");
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  /* one connection cache per Lua state: later requests reuse connections */
  lua_getfield(L, LUA_REGISTRYINDEX, SHARE_KEY);
  CURLSH **share = lua_touserdata(L, -1);
  if (share && *share) curl_easy_setopt(t->easy, CURLOPT_SHARE, *share);
  lua_pop(L, 1);
  curl_easy_setopt(t->easy, CURLOPT_USERAGENT, "aitbc/" AITBC_VERSION);
  curl_easy_setopt(t->easy, CURLOPT_ERRORBUFFER, t->errbuf);
  curl_easy_setopt(t->easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(t->easy, CURLOPT_ACCEPT_ENCODING, "");
  curl_easy_setopt(t->easy, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(t->easy, CURLOPT_WRITEDATA, t);
  curl_easy_setopt(t->easy, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(t->easy, CURLOPT_HEADERDATA, t);
  curl_easy_setopt(t->easy, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(t->easy, CURLOPT_XFERINFOFUNCTION, on_progress);
  curl_easy_setopt(t->easy, CURLOPT_XFERINFODATA, t);
  return t;
}

static const char *error_kind(CURLcode rc, const transfer_t *t) {
  switch (rc) {
    case CURLE_COULDNT_CONNECT: return "connect";
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY: return "resolve";
    case CURLE_OPERATION_TIMEDOUT: return "timeout";
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE: return "tls";
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL: return "url";
    case CURLE_ABORTED_BY_CALLBACK: return "interrupted";
    case CURLE_WRITE_ERROR: return t->aborted ? "aborted" : "network";
    default: return "network";
  }
}

static void push_headers(lua_State *L, const growbuf_t *head) {
  lua_newtable(L);
  const char *p = head->data, *end = head->data + head->len;
  while (p && p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    if (!eol) eol = end;
    const char *colon = memchr(p, ':', (size_t)(eol - p));
    if (colon && colon > p) {
      luaL_Buffer name;
      luaL_buffinit(L, &name);
      for (const char *c = p; c < colon; c++) luaL_addchar(&name, (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c));
      luaL_pushresult(&name);
      const char *v = colon + 1, *ve = eol;
      while (v < ve && (*v == ' ' || *v == '\t')) v++;
      while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ')) ve--;
      lua_pushlstring(L, v, (size_t)(ve - v));
      lua_settable(L, -3);
    }
    p = eol + 1;
  }
}

/* Pushes the outcome of a finished transfer: a response table, or nil,
 * message, kind.  Re-raises an error thrown by the on_data callback. */
static int transfer_result(lua_State *L, transfer_t *t, CURLcode rc) {
  if (t->callback_failed) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->callback_err);
    return lua_error(L);
  }
  if (rc != CURLE_OK) {
    const char *kind = error_kind(rc, t);
    lua_pushnil(L);
    if (strcmp(kind, "aborted") == 0)
      lua_pushliteral(L, "transfer stopped by the caller");
    else if (strcmp(kind, "interrupted") == 0)
      lua_pushliteral(L, "interrupted");
    else if (rc == CURLE_UNSUPPORTED_PROTOCOL)
      lua_pushliteral(L, "only http:// and https:// URLs are allowed");
    else
      lua_pushstring(L, t->errbuf[0] ? t->errbuf : curl_easy_strerror(rc));
    lua_pushstring(L, kind);
    return 3;
  }
  long status = 0;
  double total = 0;
  curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_getinfo(t->easy, CURLINFO_TOTAL_TIME, &total);
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, status);
  lua_setfield(L, -2, "status");
  push_headers(L, &t->head);
  lua_setfield(L, -2, "headers");
  if (t->on_data == LUA_NOREF) {
    lua_pushlstring(L, t->body.data ? t->body.data : "", t->body.len);
    lua_setfield(L, -2, "body");
  }
  lua_pushnumber(L, total);
  lua_setfield(L, -2, "time");
  return 1;
}

static int l_request(lua_State *L) {
  transfer_t *t = transfer_new(L, 1);
  CURLcode rc = curl_easy_perform(t->easy);
  int n = transfer_result(L, t, rc);
  transfer_release(L, t);
  return n;
}

/* The multi handle is owned by a userdata: a request that turns out to be
 * invalid raises half-way through building the set, and __gc frees it
 * (the transfers built so far are userdata too, and detach themselves). */
static CURLM **multi_new(lua_State *L) {
  CURLM **multi = lua_newuserdatauv(L, sizeof *multi, 0);
  *multi = NULL;
  luaL_setmetatable(L, MULTI_MT);
  if (!(*multi = curl_multi_init())) luaL_error(L, "curl_multi_init failed");
  return multi;
}

static void multi_close(CURLM **multi) {
  if (*multi) curl_multi_cleanup(*multi);
  *multi = NULL;
}

static int multi_gc(lua_State *L) {
  multi_close(lua_touserdata(L, 1));
  return 0;
}

static void check_multi(lua_State *L, CURLMcode rc, const char *what) {
  if (rc != CURLM_OK) luaL_error(L, "%s: %s", what, curl_multi_strerror(rc));
}

/* Runs the added transfers until all are done; codes[i] gets the result of
 * the i-th.  A failing multi call raises (else the loop could spin). */
static void multi_run(lua_State *L, CURLM *multi, CURLcode *codes) {
  int running = 1;
  while (running > 0) {
    check_multi(L, curl_multi_perform(multi, &running), "curl_multi_perform");
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(multi, &left)))
      if (msg->msg == CURLMSG_DONE) {
        char *i = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &i);
        codes[(intptr_t)i] = msg->data.result;
      }
    if (running > 0) check_multi(L, curl_multi_poll(multi, NULL, 0, 100, NULL), "curl_multi_poll");
  }
}

/* Runs several requests at once on one multi handle. */
static int l_request_many(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  int n = (int)luaL_len(L, 1);
  luaL_argcheck(L, n <= 10000, 1, "at most 10000 requests at once");
  /* one transfer userdata per request stays on the stack until the end */
  luaL_checkstack(L, n + 16, "too many requests at once");
  CURLM **multi = multi_new(L);
  int base = lua_gettop(L);
  for (int i = 1; i <= n; i++) {
    lua_geti(L, 1, i);
    transfer_t *t = transfer_new(L, lua_gettop(L));
    lua_remove(L, -2);
    check_setopt(L, curl_easy_setopt(t->easy, CURLOPT_PRIVATE, (void *)(intptr_t)i), "private");
    check_multi(L, curl_multi_add_handle(*multi, t->easy), "curl_multi_add_handle");
  }
  CURLcode *codes = lua_newuserdatauv(L, sizeof(CURLcode) * (size_t)(n + 1), 0);
  for (int i = 0; i <= n; i++) codes[i] = CURLE_FAILED_INIT;
  multi_run(L, *multi, codes);
  for (int i = 1; i <= n; i++) curl_multi_remove_handle(*multi, ((transfer_t *)lua_touserdata(L, base + i))->easy);
  multi_close(multi);
  lua_createtable(L, n, 0);
  for (int i = 1; i <= n; i++) {
    transfer_t *t = lua_touserdata(L, base + i);
    int got = transfer_result(L, t, codes[i]);
    if (got == 3) {
      lua_createtable(L, 0, 2);
      lua_insert(L, -4);
      lua_setfield(L, -4, "kind");
      lua_setfield(L, -3, "error");
      lua_pop(L, 1);
    }
    lua_rawseti(L, -2, i);
    transfer_release(L, t);
  }
  return 1;
}

static int share_gc(lua_State *L) {
  CURLSH **share = lua_touserdata(L, 1);
  if (*share) curl_share_cleanup(*share);
  *share = NULL;
  return 0;
}

int luaopen_aitbc_native_http(lua_State *L) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  static const luaL_Reg funcs[] = {{"request", l_request}, {"request_many", l_request_many}, {NULL, NULL}};
  pthread_once(&once, curl_load);
  if (curl_load_error) return luaL_error(L, "cannot load libcurl (%s): %s", AITBC_CURL_SONAME, curl_load_error);
  if (luaL_newmetatable(L, TRANSFER_MT)) {
    lua_pushcfunction(L, transfer_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, MULTI_MT)) {
    lua_pushcfunction(L, multi_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  if (lua_getfield(L, LUA_REGISTRYINDEX, SHARE_KEY) == LUA_TNIL) { /* once per state, even if re-required */
    CURLSH **share = lua_newuserdatauv(L, sizeof *share, 0);
    *share = curl_share_init();
    if (*share) curl_share_setopt(*share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
    if (luaL_newmetatable(L, SHARE_MT)) {
      lua_pushcfunction(L, share_gc);
      lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, SHARE_KEY);
  }
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  lua_pushstring(L, curl_version_info(CURLVERSION_NOW)->version);
  lua_setfield(L, -2, "curl_version");
  return 1;
}
