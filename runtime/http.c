/* aitbc.native.http: an HTTP client over libcurl.
 *   request{method, url, headers, body, timeout, connect_timeout, insecure,
 *           on_data}                -> response | nil, message, kind
 *   request_many{req, req, ...}     -> {response | {error=, kind=}, ...}
 * A response is {status=, headers={lower-case name = value}, body=, time=}.
 * on_data(chunk) streams the body instead (return false to stop); it runs
 * under pcall so a Lua error never unwinds through libcurl, and is re-raised
 * once the transfer is over.  Kinds: connect, resolve, timeout, tls, url,
 * aborted, interrupted, network. */
#define CURL_DISABLE_TYPECHECK
#include <curl/curl.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "aitbc.h"

#define TRANSFER_MT "aitbc.http.transfer"
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
  int callback_err;     /* registry ref of an error raised by the callback */
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

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  transfer_t *t = ud;
  size_t len = size * n;
  if (t->on_data == LUA_NOREF) return growbuf_append(&t->body, p, len) == 0 ? len : 0;
  lua_State *L = t->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->on_data);
  lua_pushlstring(L, p, len);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    t->callback_err = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
  }
  int stop = lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (stop) t->aborted = 1;
  return stop ? 0 : len;
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

static double opt_number(lua_State *L, int idx, const char *key, double dflt) {
  lua_getfield(L, idx, key);
  double v = luaL_optnumber(L, -1, dflt);
  lua_pop(L, 1);
  return v;
}

static void set_headers(lua_State *L, int idx, transfer_t *t) {
  t->headers = curl_slist_append(NULL, "Expect:");
  lua_getfield(L, idx, "headers");
  if (lua_istable(L, -1)) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING) {
        const char *line = lua_pushfstring(L, "%s: %s", lua_tostring(L, -2), lua_tostring(L, -1));
        if (strpbrk(line, "\r\n")) luaL_error(L, "header %s contains a line break", lua_tostring(L, -3));
        t->headers = curl_slist_append(t->headers, line);
        lua_pop(L, 1);
      }
      lua_pop(L, 1);
    }
  } else if (!lua_isnil(L, -1)) {
    luaL_error(L, "headers must be a table");
  }
  lua_pop(L, 1);
  curl_easy_setopt(t->easy, CURLOPT_HTTPHEADER, t->headers);
}

static void set_method_and_body(lua_State *L, int idx, transfer_t *t) {
  lua_getfield(L, idx, "method");
  const char *method = luaL_optstring(L, -1, "GET");
  lua_getfield(L, idx, "body");
  size_t blen = 0;
  const char *body = luaL_optlstring(L, -1, NULL, &blen);
  if (strcmp(method, "HEAD") == 0)
    curl_easy_setopt(t->easy, CURLOPT_NOBODY, 1L);
  else if (strcmp(method, "GET") != 0)
    curl_easy_setopt(t->easy, CURLOPT_CUSTOMREQUEST, method);
  if (body) {
    curl_easy_setopt(t->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
    curl_easy_setopt(t->easy, CURLOPT_COPYPOSTFIELDS, body);
    if (strcmp(method, "POST") != 0) curl_easy_setopt(t->easy, CURLOPT_CUSTOMREQUEST, method);
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
  curl_easy_setopt(t->easy, CURLOPT_URL, url);
  lua_pop(L, 1);
  set_method_and_body(L, idx, t);
  set_headers(L, idx, t);
  curl_easy_setopt(t->easy, CURLOPT_TIMEOUT_MS, (long)(opt_number(L, idx, "timeout", 30) * 1000));
  curl_easy_setopt(t->easy, CURLOPT_CONNECTTIMEOUT_MS, (long)(opt_number(L, idx, "connect_timeout", 10) * 1000));
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
  if (t->callback_err != LUA_NOREF) {
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

/* Runs several requests at once on one multi handle. */
static int l_request_many(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  int n = (int)luaL_len(L, 1);
  luaL_argcheck(L, n <= 10000, 1, "at most 10000 requests at once");
  /* one transfer userdata per request stays on the stack until the end */
  luaL_checkstack(L, n + 16, "too many requests at once");
  CURLM *multi = curl_multi_init();
  if (!multi) return luaL_error(L, "curl_multi_init failed");
  int base = lua_gettop(L);
  for (int i = 1; i <= n; i++) {
    lua_geti(L, 1, i);
    transfer_t *t = transfer_new(L, lua_gettop(L));
    lua_remove(L, -2);
    curl_easy_setopt(t->easy, CURLOPT_PRIVATE, (void *)(intptr_t)i);
    curl_multi_add_handle(multi, t->easy);
  }
  CURLcode *codes = lua_newuserdatauv(L, sizeof(CURLcode) * (size_t)(n + 1), 0);
  int running = n;
  while (running > 0) {
    curl_multi_perform(multi, &running);
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(multi, &left)))
      if (msg->msg == CURLMSG_DONE) {
        intptr_t i;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&i);
        codes[i] = msg->data.result;
      }
    if (running > 0) curl_multi_poll(multi, NULL, 0, 100, NULL);
  }
  for (int i = 1; i <= n; i++) curl_multi_remove_handle(multi, ((transfer_t *)lua_touserdata(L, base + i))->easy);
  curl_multi_cleanup(multi);
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
