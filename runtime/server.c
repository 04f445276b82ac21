/* aitbc.native.server: an HTTP server over libmicrohttpd whose handler is
 * Lua.  One thread per connection; each request borrows a Lua state from a
 * pool (states are created on demand, each with the full host set-up, and
 * reused), so a slow or long-polling handler holds up only its own client.
 *
 *   start{host=, port=, handler="module", config="string", max_body=, slots=3 x cores}
 * slots: how many connection threads may run handlers at once.
 *     -> server | nil, err
 *   server:port(), server:stop([grace_seconds]), server:stats()
 *
 * The handler module returns factory(config) -> handle(request) -> response.
 * request  = {method, path, query={}, headers={lower-case}, body, remote, connected()}
 * response = {status, headers={}, body=string} or {..., stream=function}
 * where stream() returns the next chunk, or nil at the end. */
#include <arpa/inet.h>
#include <dlfcn.h>
#include <poll.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "aitbc.h"

#define SERVER_MT "aitbc.server"

/* libmicrohttpd (and GnuTLS behind it) is loaded on first use, like libcurl. */
/* clang-format off */
#define MHD_FUNCTIONS(X) \
  X(MHD_start_daemon) \
  X(MHD_stop_daemon) \
  X(MHD_quiesce_daemon) \
  X(MHD_get_daemon_info) \
  X(MHD_get_connection_values) \
  X(MHD_get_connection_info) \
  X(MHD_create_response_from_buffer) \
  X(MHD_create_response_from_callback) \
  X(MHD_add_response_header) \
  X(MHD_queue_response) \
  X(MHD_destroy_response) \
  X(MHD_get_version)
/* clang-format on */

static struct {
#define X(name) __typeof__(&name) name;
  MHD_FUNCTIONS(X)
#undef X
} mhd;
static const char *mhd_load_error;

static void mhd_load(void) {
  void *lib = dlopen(AITBC_MHD_SONAME, RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    mhd_load_error = dlerror();
    return;
  }
#define X(name)                                                \
  if (!(mhd.name = (__typeof__(mhd.name))dlsym(lib, #name))) { \
    mhd_load_error = "missing symbol " #name;                  \
    return;                                                    \
  }
  MHD_FUNCTIONS(X)
#undef X
}

#define MHD_start_daemon mhd.MHD_start_daemon
#define MHD_stop_daemon mhd.MHD_stop_daemon
#define MHD_quiesce_daemon mhd.MHD_quiesce_daemon
#define MHD_get_daemon_info mhd.MHD_get_daemon_info
#define MHD_get_connection_values mhd.MHD_get_connection_values
#define MHD_get_connection_info mhd.MHD_get_connection_info
#define MHD_create_response_from_buffer mhd.MHD_create_response_from_buffer
#define MHD_create_response_from_callback mhd.MHD_create_response_from_callback
#define MHD_add_response_header mhd.MHD_add_response_header
#define MHD_queue_response mhd.MHD_queue_response
#define MHD_destroy_response mhd.MHD_destroy_response
#define MHD_get_version mhd.MHD_get_version

typedef struct lstate {
  lua_State *L;
  struct lstate *next;
} lstate_t;

typedef struct {
  struct MHD_Daemon *daemon;
  pthread_mutex_t lock;
  /* at most `slots` connection threads run Lua handlers at once: more would
   * only take turns on the cores and the database's write lock */
  pthread_mutex_t slot_lock;
  pthread_cond_t slot_free;
  int slots, busy;
  lstate_t *idle;
  char *handler, *config, *path, *cpath;
  size_t max_body;
  atomic_long inflight, requests, states;
  int port;
} server_t;

typedef struct {
  server_t *srv;
  char *body;
  size_t len, cap;
  int too_large;
  /* streaming responses keep their state until the stream ends */
  lstate_t *stream_state;
  int stream_ref;
  char *pending;
  size_t pending_len, pending_off;
} request_t;

static const char ERR_INTERNAL[] = "{\"error\":{\"code\":\"internal\",\"message\":\"internal server error\"}}";
static const char ERR_TOO_LARGE[] =
    "{\"error\":{\"code\":\"payload_too_large\",\"message\":\"request body too large\"}}";

/* ---- handler slots ---- */

static __thread server_t *slot_owner; /* the server this thread serves a request of */
static __thread int slot_held;        /* and whether it holds one of its slots now */

static void slot_acquire(server_t *srv) {
  pthread_mutex_lock(&srv->slot_lock);
  while (srv->busy >= srv->slots) pthread_cond_wait(&srv->slot_free, &srv->slot_lock);
  srv->busy++;
  pthread_mutex_unlock(&srv->slot_lock);
  slot_owner = srv;
  slot_held = 1;
}

static void slot_release(server_t *srv) {
  pthread_mutex_lock(&srv->slot_lock);
  srv->busy--;
  pthread_cond_signal(&srv->slot_free);
  pthread_mutex_unlock(&srv->slot_lock);
  slot_held = 0;
}

void aitbc_server_yield_slot(void) {
  if (slot_owner && slot_held) slot_release(slot_owner);
}

void aitbc_server_reclaim_slot(void) {
  if (slot_owner && !slot_held) slot_acquire(slot_owner);
}

/* ---- Lua state pool ---- */

static lstate_t *state_create(server_t *srv) {
  lua_State *L = luaL_newstate();
  if (!L) return NULL;
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
    fprintf(stderr, "aitbc server: handler %s failed to load: %s\n", srv->handler,
            lua_isstring(L, -1) ? lua_tostring(L, -1) : "it did not return a function");
    lua_close(L);
    return NULL;
  }
  lua_setfield(L, LUA_REGISTRYINDEX, "aitbc.server.handle");
  lstate_t *s = calloc(1, sizeof *s);
  if (!s) {
    lua_close(L);
    return NULL;
  }
  s->L = L;
  atomic_fetch_add(&srv->states, 1);
  return s;
}

static lstate_t *state_borrow(server_t *srv) {
  pthread_mutex_lock(&srv->lock);
  lstate_t *s = srv->idle;
  if (s) srv->idle = s->next;
  pthread_mutex_unlock(&srv->lock);
  return s ? s : state_create(srv);
}

static void state_return(server_t *srv, lstate_t *s) {
  lua_settop(s->L, 0);
  pthread_mutex_lock(&srv->lock);
  s->next = srv->idle;
  srv->idle = s;
  pthread_mutex_unlock(&srv->lock);
}

/* ---- request → Lua table ---- */

static enum MHD_Result add_pair(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
  lua_State *L = cls;
  (void)kind;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (const char *c = key; *c; c++)
    luaL_addchar(&b, (char)(kind == MHD_HEADER_KIND && *c >= 'A' && *c <= 'Z' ? *c + 32 : *c));
  luaL_pushresult(&b);
  lua_pushstring(L, value ? value : "");
  lua_settable(L, -3);
  return MHD_YES;
}

/* request.connected() -> false once the client has hung up (a long poll
 * must not claim work for a client that is gone).  Valid only while the
 * handler runs. */
static int l_connected(lua_State *L) {
  struct MHD_Connection *conn = lua_touserdata(L, lua_upvalueindex(1));
  const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
  if (!ci) {
    lua_pushboolean(L, 1);
    return 1;
  }
  struct pollfd pfd = {ci->connect_fd, POLLRDHUP, 0};
  int hung_up = poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR));
  lua_pushboolean(L, !hung_up);
  return 1;
}

static void push_request(lua_State *L, struct MHD_Connection *conn, const char *method, const char *url,
                         const request_t *req) {
  lua_createtable(L, 0, 6);
  lua_pushstring(L, method);
  lua_setfield(L, -2, "method");
  lua_pushstring(L, url);
  lua_setfield(L, -2, "path");
  lua_newtable(L);
  MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, add_pair, L);
  lua_setfield(L, -2, "query");
  lua_newtable(L);
  MHD_get_connection_values(conn, MHD_HEADER_KIND, add_pair, L);
  lua_setfield(L, -2, "headers");
  lua_pushlstring(L, req->body ? req->body : "", req->len);
  lua_setfield(L, -2, "body");
  const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  char addr[INET6_ADDRSTRLEN] = "";
  if (ci && ci->client_addr) {
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
      inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, addr, sizeof addr);
    else if (sa->sa_family == AF_INET6)
      inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, addr, sizeof addr);
  }
  lua_pushstring(L, addr);
  lua_setfield(L, -2, "remote");
  lua_pushlightuserdata(L, conn);
  lua_pushcclosure(L, l_connected, 1);
  lua_setfield(L, -2, "connected");
}

/* ---- Lua table → response ---- */

static void add_headers(lua_State *L, int idx, struct MHD_Response *resp) {
  lua_getfield(L, idx, "headers");
  if (lua_istable(L, -1)) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      if (lua_type(L, -2) == LUA_TSTRING && (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER))
        MHD_add_response_header(resp, lua_tostring(L, -2), lua_tostring(L, -1));
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
  request_t *req = cls;
  (void)pos;
  if (req->pending_off >= req->pending_len) {
    lua_State *L = req->stream_state->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, req->stream_ref);
    if (lua_pcall(L, 0, 1, 0) != LUA_OK) {
      fprintf(stderr, "aitbc server: stream error: %s\n", lua_tostring(L, -1));
      lua_pop(L, 1);
      return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t len;
    const char *chunk = lua_tolstring(L, -1, &len);
    if (!chunk) {
      lua_pop(L, 1);
      return MHD_CONTENT_READER_END_OF_STREAM;
    }
    char *copy = realloc(req->pending, len ? len : 1);
    if (!copy) {
      lua_pop(L, 1);
      return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    memcpy(copy, chunk, len);
    lua_pop(L, 1);
    req->pending = copy;
    req->pending_len = len;
    req->pending_off = 0;
    if (len == 0) return 0;
  }
  size_t n = req->pending_len - req->pending_off;
  if (n > max) n = max;
  memcpy(buf, req->pending + req->pending_off, n);
  req->pending_off += n;
  return (ssize_t)n;
}

static struct MHD_Response *build_response(lua_State *L, request_t *req, lstate_t *st, int *status, int *keep_state) {
  struct MHD_Response *resp;
  lua_getfield(L, -1, "status");
  *status = (int)luaL_optinteger(L, -1, 200);
  lua_pop(L, 1);
  lua_getfield(L, -1, "stream");
  if (lua_isfunction(L, -1)) {
    req->stream_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    req->stream_state = st;
    *keep_state = 1;
    resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_reader, req, NULL);
  } else {
    lua_pop(L, 1);
    lua_getfield(L, -1, "body");
    size_t len = 0;
    const char *body = lua_tolstring(L, -1, &len);
    resp = MHD_create_response_from_buffer(len, (void *)(body ? body : ""), MHD_RESPMEM_MUST_COPY);
    lua_pop(L, 1);
  }
  if (resp) add_headers(L, lua_gettop(L), resp);
  return resp;
}

static enum MHD_Result respond_static(struct MHD_Connection *conn, int status, const char *json) {
  struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(json), (void *)json, MHD_RESPMEM_PERSISTENT);
  MHD_add_response_header(resp, "Content-Type", "application/json");
  enum MHD_Result r = MHD_queue_response(conn, (unsigned)status, resp);
  MHD_destroy_response(resp);
  return r;
}

/* Runs the Lua handler; returns the response to queue (NULL: answer 500). */
static struct MHD_Response *run_handler(server_t *srv, struct MHD_Connection *conn, const char *method, const char *url,
                                        request_t *req, int *status) {
  lstate_t *st = state_borrow(srv);
  if (!st) return NULL;
  lua_State *L = st->L;
  lua_getfield(L, LUA_REGISTRYINDEX, "aitbc.server.handle");
  push_request(L, conn, method, url, req);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_istable(L, -1)) {
    fprintf(stderr, "aitbc server: handler error on %s %s: %s\n", method, url,
            lua_isstring(L, -1) ? lua_tostring(L, -1) : "handler did not return a table");
    state_return(srv, st);
    return NULL;
  }
  int keep_state = 0;
  struct MHD_Response *resp = build_response(L, req, st, status, &keep_state);
  if (!keep_state) state_return(srv, st);
  return resp;
}

static enum MHD_Result dispatch(server_t *srv, struct MHD_Connection *conn, const char *method, const char *url,
                                request_t *req) {
  int status = 500;
  slot_acquire(srv);
  struct MHD_Response *resp = run_handler(srv, conn, method, url, req, &status);
  slot_release(srv);
  slot_owner = NULL;
  if (!resp) return respond_static(conn, 500, ERR_INTERNAL);
  enum MHD_Result r = MHD_queue_response(conn, (unsigned)status, resp);
  MHD_destroy_response(resp);
  return r;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
  server_t *srv = cls;
  (void)version;
  request_t *req = *con_cls;
  if (!req) {
    req = calloc(1, sizeof *req);
    if (!req) return MHD_NO;
    req->srv = srv;
    req->stream_ref = LUA_NOREF;
    *con_cls = req;
    atomic_fetch_add(&srv->inflight, 1);
    return MHD_YES;
  }
  if (*upload_size) {
    if (req->len + *upload_size > srv->max_body) {
      req->too_large = 1;
    } else if (!req->too_large) {
      if (req->len + *upload_size > req->cap) {
        size_t cap = req->cap ? req->cap * 2 : 8192;
        while (cap < req->len + *upload_size) cap *= 2;
        char *b = realloc(req->body, cap);
        if (!b) return MHD_NO;
        req->body = b;
        req->cap = cap;
      }
      memcpy(req->body + req->len, upload, *upload_size);
      req->len += *upload_size;
    }
    *upload_size = 0;
    return MHD_YES;
  }
  atomic_fetch_add(&srv->requests, 1);
  if (req->too_large) return respond_static(conn, 413, ERR_TOO_LARGE);
  return dispatch(srv, conn, method, url, req);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe) {
  server_t *srv = cls;
  request_t *req = *con_cls;
  (void)conn, (void)toe;
  if (!req) return;
  if (req->stream_state) {
    luaL_unref(req->stream_state->L, LUA_REGISTRYINDEX, req->stream_ref);
    state_return(srv, req->stream_state);
  }
  free(req->pending);
  free(req->body);
  free(req);
  *con_cls = NULL;
  atomic_fetch_sub(&srv->inflight, 1);
}

/* ---- Lua API ---- */

static char *opt_strdup(lua_State *L, int idx, const char *key, const char *dflt) {
  lua_getfield(L, idx, key);
  const char *s = luaL_optstring(L, -1, dflt);
  char *copy = strdup(s ? s : "");
  lua_pop(L, 1);
  return copy;
}

static void server_free(server_t *srv) {
  if (srv->daemon) MHD_stop_daemon(srv->daemon);
  srv->daemon = NULL;
  while (srv->idle) {
    lstate_t *s = srv->idle;
    srv->idle = s->next;
    lua_close(s->L);
    free(s);
  }
  free(srv->handler), free(srv->config), free(srv->path), free(srv->cpath);
  srv->handler = srv->config = srv->path = srv->cpath = NULL;
}

static int l_start(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  server_t *srv = lua_newuserdatauv(L, sizeof *srv, 0);
  memset(srv, 0, sizeof *srv);
  pthread_mutex_init(&srv->lock, NULL);
  pthread_mutex_init(&srv->slot_lock, NULL);
  pthread_cond_init(&srv->slot_free, NULL);
  luaL_setmetatable(L, SERVER_MT);
  lua_getfield(L, 1, "handler");
  luaL_argcheck(L, lua_isstring(L, -1), 1, "handler (a module name) is required");
  lua_pop(L, 1);
  lua_getfield(L, 1, "slots");
  /* default: three per core (measured best on 2 cores: 2 starves, 8+ only adds switching) */
  srv->slots = (int)luaL_optinteger(L, -1, 3 * (int)sysconf(_SC_NPROCESSORS_ONLN));
  lua_pop(L, 1);
  luaL_argcheck(L, srv->slots >= 1 && srv->slots <= 1024, 1, "slots must be 1..1024");
  lua_getfield(L, 1, "max_body");
  srv->max_body = (size_t)luaL_optinteger(L, -1, 1 << 20);
  lua_getfield(L, 1, "port");
  lua_Integer port = luaL_optinteger(L, -1, 0);
  lua_pop(L, 2);
  luaL_argcheck(L, port >= 0 && port <= 65535, 1, "port must be 0..65535");
  lua_getfield(L, 1, "host");
  const char *host = luaL_optstring(L, -1, "127.0.0.1");
  struct sockaddr_in addr;
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
    lua_pushnil(L);
    lua_pushfstring(L, "invalid listen address '%s' (expected an IPv4 address such as 127.0.0.1)", host);
    return 2;
  }
  lua_pop(L, 1);
  srv->handler = opt_strdup(L, 1, "handler", NULL);
  srv->config = opt_strdup(L, 1, "config", "");
  lua_getglobal(L, "package");
  srv->path = opt_strdup(L, lua_gettop(L), "path", "");
  srv->cpath = opt_strdup(L, lua_gettop(L), "cpath", "");
  lua_pop(L, 1);
  /* connection threads inherit this mask: signals stay with the main thread */
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  sigaddset(&block, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &block, &old);
  srv->daemon =
      MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ITC,
                       (uint16_t)port, NULL, NULL, on_request, srv, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                       MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
                       MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)1024, MHD_OPTION_END);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (!srv->daemon) {
    server_free(srv);
    lua_pushnil(L);
    lua_pushfstring(L, "cannot listen on %s:%d (address in use or not permitted)", host, (int)port);
    return 2;
  }
  const union MHD_DaemonInfo *di = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
  srv->port = di ? di->port : (int)port;
  return 1;
}

static server_t *check_server(lua_State *L) { return luaL_checkudata(L, 1, SERVER_MT); }

static int l_port(lua_State *L) {
  lua_pushinteger(L, check_server(L)->port);
  return 1;
}

static int l_stats(lua_State *L) {
  server_t *srv = check_server(L);
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, atomic_load(&srv->inflight));
  lua_setfield(L, -2, "inflight");
  lua_pushinteger(L, atomic_load(&srv->requests));
  lua_setfield(L, -2, "requests");
  lua_pushinteger(L, atomic_load(&srv->states));
  lua_setfield(L, -2, "states");
  return 1;
}

/* Stops accepting, lets requests in flight finish (up to grace seconds),
 * then closes everything. */
static int l_stop(lua_State *L) {
  server_t *srv = check_server(L);
  double grace = luaL_optnumber(L, 2, 10);
  if (!srv->daemon) return 0;
  MHD_socket listener = MHD_quiesce_daemon(srv->daemon);
  if (listener != MHD_INVALID_SOCKET) close(listener); /* ours to close: new connections are refused */
  struct timespec tick = {0, 10 * 1000 * 1000};
  for (double waited = 0; atomic_load(&srv->inflight) > 0 && waited < grace; waited += 0.01) nanosleep(&tick, NULL);
  server_free(srv);
  return 0;
}

static int l_gc(lua_State *L) {
  server_free(check_server(L));
  return 0;
}

int luaopen_aitbc_native_server(lua_State *L) {
  static const luaL_Reg methods[] = {{"port", l_port}, {"stop", l_stop}, {"stats", l_stats}, {NULL, NULL}};
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, mhd_load);
  if (mhd_load_error) return luaL_error(L, "cannot load libmicrohttpd (%s): %s", AITBC_MHD_SONAME, mhd_load_error);
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
  lua_pushstring(L, MHD_get_version());
  lua_setfield(L, -2, "mhd_version");
  return 1;
}
