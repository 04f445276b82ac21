/* Host set-up shared by the main state and server worker states: standard
 * libraries, lua-cjson, the native modules and the embedded Lua tree, all
 * served through package.preload so nothing is loaded before it is needed. */
#include <lualib.h>
#include <stdlib.h>

#include "aitbc.h"

int luaopen_cjson(lua_State *L);
int luaopen_cjson_safe(lua_State *L);

static int load_embedded(lua_State *L) {
  const struct aitbc_embedded_file *f = &aitbc_embedded_files[lua_tointeger(L, lua_upvalueindex(1))];
  /* bytecode compiled from lua/ at build time (see the Makefile) */
  if (luaL_loadbufferx(L, (const char *)f->data, f->size, f->chunk, "b") != LUA_OK) return lua_error(L);
  lua_pushstring(L, f->module);
  lua_pushstring(L, f->chunk + 1);
  lua_call(L, 2, 1);
  return 1;
}

static void preload_embedded(lua_State *L, int preload) {
  for (size_t i = 0; i < aitbc_embedded_count; i++) {
    lua_pushinteger(L, (lua_Integer)i);
    lua_pushcclosure(L, load_embedded, 1);
    lua_setfield(L, preload, aitbc_embedded_files[i].module);
  }
}

/* AITBC_LUA_DIR=path/to/lua: modules come from that tree instead, so a
 * developer edits Lua without rebuilding. */
static void prepend_source_dir(lua_State *L, const char *dir) {
  lua_getglobal(L, "package");
  lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;", dir, dir);
  lua_getfield(L, -2, "path");
  lua_concat(L, 2);
  lua_setfield(L, -2, "path");
  lua_pop(L, 1);
}

void aitbc_host_init(lua_State *L) {
  static const luaL_Reg natives[] = {{"cjson", luaopen_cjson},
                                     {"cjson.safe", luaopen_cjson_safe},
                                     {"aitbc.native.crypto", luaopen_aitbc_native_crypto},
                                     {"aitbc.native.http", luaopen_aitbc_native_http},
                                     {"aitbc.native.server", luaopen_aitbc_native_server},
                                     {"aitbc.native.db", luaopen_aitbc_native_db},
                                     {"aitbc.native.sys", luaopen_aitbc_native_sys},
                                     {"aitbc.native.json", luaopen_aitbc_native_json},
                                     {"aitbc.native.jq", luaopen_aitbc_native_jq},
                                     {"aitbc.native.gpu", luaopen_aitbc_native_gpu},
                                     {"aitbc.native.net", luaopen_aitbc_native_net},
                                     {"aitbc.native.sandbox", luaopen_aitbc_native_sandbox},
                                     {NULL, NULL}};
  luaL_openlibs(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  int preload = lua_gettop(L);
  for (const luaL_Reg *n = natives; n->name; n++) {
    lua_pushcfunction(L, n->func);
    lua_setfield(L, preload, n->name);
  }
  const char *dir = getenv("AITBC_LUA_DIR");
  if (dir && *dir)
    prepend_source_dir(L, dir);
  else
    preload_embedded(L, preload);
  lua_pop(L, 1);
}
