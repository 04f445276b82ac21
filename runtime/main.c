/* Entry point: one Lua state, everything else in lua/aitbc/main.lua.
 * Start-up runs protected; the Lua side returns the process exit code. */
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>

#include "aitbc.h"

static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL && !lua_isnoneornil(L, 1)) {
    /* non-string error object: keep it, main.lua already formats its own */
    return 1;
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

static int run_main(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = (char **)lua_touserdata(L, 2);
  aitbc_host_init(L);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "aitbc.main");
  lua_call(L, 1, 1);
  lua_createtable(L, argc, 1);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i);
  }
  lua_call(L, 1, 1);
  return 1;
}

int main(int argc, char **argv) {
  lua_State *L = luaL_newstate();
  if (L == NULL) {
    fputs("aitbc: cannot create Lua state (out of memory)\n", stderr);
    return 1;
  }
  aitbc_interrupt_install(L);
  lua_pushcfunction(L, traceback);
  lua_pushcfunction(L, run_main);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  int status = lua_pcall(L, 2, 1, 1);
  int code;
  if (status != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    fprintf(stderr, "aitbc: internal error: %s\n", msg ? msg : "(error object is not a string)");
    code = aitbc_interrupted() ? 130 : 1;
  } else {
    code = (int)luaL_optinteger(L, -1, 0);
  }
  fflush(stdout);
  lua_close(L);
  return code;
}
