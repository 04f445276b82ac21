/* aitbc.native.net: plain TCP connections, for what HTTP clients cannot do:
 * tests and benchmarks that speak raw (or broken) HTTP, hold thousands of
 * idle connections, or come from several loopback addresses.
 *   connect(host, port [, {source=, timeout=}]) -> conn | nil, err
 *   conn:send(data) -> bytes | nil, err
 *   conn:recv([max [, timeout]]) -> data | nil, "timeout" | "closed" | err
 *   conn:shutdown(); conn:close(); conn:fd()
 * Connections are non-blocking underneath; timeouts are in seconds. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "aitbc.h"

#define CONN_MT "aitbc.net.conn"

typedef struct {
  int fd;
} tcp_t;

static int push_error(lua_State *L, const char *what, int err) {
  lua_pushnil(L);
  lua_pushfstring(L, "%s: %s", what, strerror(err));
  return 2;
}

/* Waits for events on fd; 1 ready, 0 timeout. */
static int wait_fd(int fd, short events, double timeout) {
  struct pollfd p = {fd, events, 0};
  int ms = timeout < 0 ? -1 : (int)(timeout * 1000);
  int r;
  do r = poll(&p, 1, ms);
  while (r < 0 && errno == EINTR);
  return r > 0;
}

static int l_connect(lua_State *L) {
  const char *host = luaL_checkstring(L, 1);
  lua_Integer port = luaL_checkinteger(L, 2);
  luaL_argcheck(L, port > 0 && port <= 65535, 2, "port must be 1..65535");
  const char *source = NULL;
  double timeout = 5;
  if (lua_istable(L, 3)) {
    lua_getfield(L, 3, "source");
    source = lua_tostring(L, -1);
    lua_getfield(L, 3, "timeout");
    timeout = luaL_optnumber(L, -1, 5);
    lua_pop(L, 2);
  }
  struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  if (inet_pton(AF_INET, host, &to.sin_addr) != 1) return luaL_argerror(L, 1, "an IPv4 address");
  tcp_t *t = lua_newuserdatauv(L, sizeof *t, 0);
  t->fd = -1;
  luaL_setmetatable(L, CONN_MT);
  t->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (t->fd < 0) return push_error(L, "socket", errno);
  if (source) {
    struct sockaddr_in from = {.sin_family = AF_INET};
    if (inet_pton(AF_INET, source, &from.sin_addr) != 1) return luaL_argerror(L, 3, "source must be an IPv4 address");
    if (bind(t->fd, (struct sockaddr *)&from, sizeof from) < 0) return push_error(L, "bind", errno);
  }
  if (connect(t->fd, (struct sockaddr *)&to, sizeof to) < 0) {
    if (errno != EINPROGRESS) return push_error(L, "connect", errno);
    if (!wait_fd(t->fd, POLLOUT, timeout)) return push_error(L, "connect", ETIMEDOUT);
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(t->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) return push_error(L, "connect", err);
  }
  return 1;
}

static tcp_t *check_conn(lua_State *L) {
  tcp_t *t = luaL_checkudata(L, 1, CONN_MT);
  if (t->fd < 0) luaL_argerror(L, 1, "the connection is closed");
  return t;
}

/* send(data [, timeout]) -> bytes sent (all of them, unless the peer stops reading) */
static int l_send(lua_State *L) {
  tcp_t *t = check_conn(L);
  size_t len, off = 0;
  const char *data = luaL_checklstring(L, 2, &len);
  double timeout = luaL_optnumber(L, 3, 5);
  while (off < len) {
    ssize_t n = send(t->fd, data + off, len - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += (size_t)n;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!wait_fd(t->fd, POLLOUT, timeout)) break;
    } else {
      if (off) break;
      return push_error(L, "send", errno);
    }
  }
  lua_pushinteger(L, (lua_Integer)off);
  return 1;
}

static int l_recv(lua_State *L) {
  tcp_t *t = check_conn(L);
  lua_Integer max = luaL_optinteger(L, 2, 65536);
  double timeout = luaL_optnumber(L, 3, 5);
  luaL_argcheck(L, max > 0 && max <= (1 << 24), 2, "max must be 1..16 MiB");
  luaL_Buffer b;
  char *p = luaL_buffinitsize(L, &b, (size_t)max);
  for (;;) {
    ssize_t n = recv(t->fd, p, (size_t)max, 0);
    if (n > 0) {
      luaL_pushresultsize(&b, (size_t)n);
      return 1;
    }
    if (n == 0) {
      lua_pushnil(L);
      lua_pushliteral(L, "closed");
      return 2;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      int e = errno;
      lua_pushnil(L);
      lua_pushstring(L, e == ECONNRESET ? "closed" : strerror(e));
      return 2;
    }
    if (!wait_fd(t->fd, POLLIN, timeout)) {
      lua_pushnil(L);
      lua_pushliteral(L, "timeout");
      return 2;
    }
  }
}

static int l_shutdown(lua_State *L) {
  shutdown(check_conn(L)->fd, SHUT_WR);
  return 0;
}

static int l_fd(lua_State *L) {
  lua_pushinteger(L, check_conn(L)->fd);
  return 1;
}

static int l_close(lua_State *L) {
  tcp_t *t = luaL_checkudata(L, 1, CONN_MT);
  if (t->fd >= 0) close(t->fd);
  t->fd = -1;
  return 0;
}

int luaopen_aitbc_native_net(lua_State *L) {
  static const luaL_Reg methods[] = {{"send", l_send},   {"recv", l_recv}, {"shutdown", l_shutdown},
                                     {"close", l_close}, {"fd", l_fd},     {NULL, NULL}};
  if (luaL_newmetatable(L, CONN_MT)) {
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_close);
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
  lua_newtable(L);
  lua_pushcfunction(L, l_connect);
  lua_setfield(L, -2, "connect");
  return 1;
}
