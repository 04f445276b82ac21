/* Fault injection for specs of the C/Lua boundary: makes the running Lua
 * state's allocator fail, so a spec can check that a native function which
 * hits "not enough memory" where it must not (inside a libcurl callback, say)
 * still leaks nothing.  Built by `make` as $(BUILD)/test/alloc_fail.so, loaded with
 * package.loadlib(path, "luaopen_alloc_fail"):
 *   fail(n [, after])  n allocations of this state fail, after `after`
 *            (default 0) more have succeeded; Lua retries a failed one
 *            after an emergency collection, so n = 2 fails one request
 *   pending() how many failures are still to come */
#include <lauxlib.h>
#include <lua.h>

static lua_Alloc real_alloc;
static void *real_ud;
static int failures_left, successes_left;

static void *failing_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  if (nsize > 0 && failures_left > 0) {
    if (successes_left == 0) {
      failures_left--;
      return NULL;
    }
    successes_left--;
  }
  return real_alloc(real_ud, ptr, osize, nsize);
}

/* Puts the real allocator back before lua_close unloads this library
 * (its finalizer runs before that of package.loadlib's handle list). */
static int restore(lua_State *L) {
  if (real_alloc) lua_setallocf(L, real_alloc, real_ud);
  real_alloc = NULL;
  failures_left = successes_left = 0;
  return 0;
}

static int l_fail(lua_State *L) {
  int n = (int)luaL_checkinteger(L, 1), after = (int)luaL_optinteger(L, 2, 0);
  if (!real_alloc) {
    lua_newuserdatauv(L, 0, 0);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, restore);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, "alloc_fail.restore");
    real_alloc = lua_getallocf(L, &real_ud);
    lua_setallocf(L, failing_alloc, NULL);
  }
  failures_left = n;
  successes_left = after;
  return 0;
}

static int l_pending(lua_State *L) {
  lua_pushinteger(L, failures_left);
  return 1;
}

int luaopen_alloc_fail(lua_State *L);
int luaopen_alloc_fail(lua_State *L) {
  static const luaL_Reg funcs[] = {{"fail", l_fail}, {"pending", l_pending}, {NULL, NULL}};
  luaL_newlib(L, funcs);
  return 1;
}
