/* aitbc.native.db: SQLite for Lua.
 *   open(path [, {readonly=, busy_timeout_ms=}])  -> db | nil, err
 *   db:exec(sql)                       -> true | nil, err   (several statements)
 *   db:prepare(sql)                    -> stmt | nil, err
 *   db:changes(), db:last_insert_id(), db:backup(path), db:close()
 *   db:backup_start(path) -> backup | nil, err; backup:step(pages) ->
 *                            "more"|"busy"|"done", remaining, pagecount;
 *                            backup:finish() -> true | nil, err
 *   db:limit(name [, value])           -> the previous value (name: length,
 *                                         sql_length, column, variable_number)
 *   stmt:bind(...) / stmt:bind{name=v} -> stmt | nil, err (a value SQLite
 *                                         refuses, e.g. too big: named)
 *   stmt:step()  -> row table | false (done) | nil, err
 *   stmt:reset(), stmt:finalize()
 * Integers stay integers (amounts are integer base units); strings bind as
 * text unless wrapped with db.blob(s).  SQL errors are expected failures. */
#include <sqlite3.h>
#include <string.h>

#include "aitbc.h"

#define DB_MT "aitbc.db"
#define STMT_MT "aitbc.db.stmt"
#define BLOB_MT "aitbc.db.blob"
#define BACKUP_MT "aitbc.db.backup"

typedef struct {
  sqlite3 *db;
} db_t;

typedef struct {
  sqlite3_stmt *stmt;
  sqlite3 *db;
} stmt_t;

static db_t *check_db(lua_State *L) {
  db_t *d = luaL_checkudata(L, 1, DB_MT);
  if (!d->db) luaL_error(L, "database is closed");
  return d;
}

static stmt_t *check_stmt(lua_State *L) {
  stmt_t *s = luaL_checkudata(L, 1, STMT_MT);
  if (!s->stmt) luaL_error(L, "statement is finalized");
  return s;
}

static int push_error(lua_State *L, sqlite3 *db) {
  lua_pushnil(L);
  lua_pushstring(L, db ? sqlite3_errmsg(db) : "out of memory");
  lua_pushinteger(L, db ? sqlite3_extended_errcode(db) : SQLITE_NOMEM);
  return 3;
}

static int l_open(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int readonly = 0;
  lua_Integer busy = 5000;
  if (lua_istable(L, 2)) {
    lua_getfield(L, 2, "readonly");
    readonly = lua_toboolean(L, -1);
    lua_getfield(L, 2, "busy_timeout_ms");
    busy = luaL_optinteger(L, -1, busy);
    lua_pop(L, 2);
  }
  db_t *d = lua_newuserdatauv(L, sizeof *d, 0);
  d->db = NULL;
  luaL_setmetatable(L, DB_MT);
  int flags = (readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) | SQLITE_OPEN_NOMUTEX;
  if (sqlite3_open_v2(path, &d->db, flags, NULL) != SQLITE_OK) {
    int n = push_error(L, d->db);
    sqlite3_close_v2(d->db);
    d->db = NULL;
    return n;
  }
  sqlite3_busy_timeout(d->db, (int)busy);
  sqlite3_extended_result_codes(d->db, 1);
  return 1;
}

/* The error is read from the connection (sqlite3_exec's own copy of it
 * would be a malloc'd string held across the push, which can raise). */
static int l_exec(lua_State *L) {
  db_t *d = check_db(L);
  const char *sql = luaL_checkstring(L, 2);
  if (sqlite3_exec(d->db, sql, NULL, NULL, NULL) != SQLITE_OK) return push_error(L, d->db);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_prepare(lua_State *L) {
  db_t *d = check_db(L);
  size_t len;
  const char *sql = luaL_checklstring(L, 2, &len);
  stmt_t *s = lua_newuserdatauv(L, sizeof *s, 0);
  s->stmt = NULL;
  s->db = d->db;
  luaL_setmetatable(L, STMT_MT);
  if (sqlite3_prepare_v2(d->db, sql, (int)len, &s->stmt, NULL) != SQLITE_OK) return push_error(L, d->db);
  if (!s->stmt) {
    lua_pushnil(L);
    lua_pushliteral(L, "no SQL statement in the text");
    return 2;
  }
  return 1;
}

static int l_changes(lua_State *L) {
  lua_pushinteger(L, sqlite3_changes64(check_db(L)->db));
  return 1;
}

static int l_last_insert_id(lua_State *L) {
  lua_pushinteger(L, sqlite3_last_insert_rowid(check_db(L)->db));
  return 1;
}

/* Online backup into a new file, a few pages at a time so writers proceed.
 * The destination is a db userdata, so a raise while pushing its error
 * message still closes it. */
static int l_backup(lua_State *L) {
  db_t *d = check_db(L);
  const char *path = luaL_checkstring(L, 2);
  db_t *to = lua_newuserdatauv(L, sizeof *to, 0);
  to->db = NULL;
  luaL_setmetatable(L, DB_MT);
  if (sqlite3_open_v2(path, &to->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) {
    int n = push_error(L, to->db);
    sqlite3_close_v2(to->db);
    to->db = NULL;
    return n;
  }
  sqlite3 *dest = to->db;
  sqlite3_backup *b = sqlite3_backup_init(dest, "main", d->db, "main");
  if (!b) {
    int n = push_error(L, dest);
    sqlite3_close_v2(dest);
    to->db = NULL;
    return n;
  }
  int rc;
  do {
    rc = sqlite3_backup_step(b, 256);
    if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) sqlite3_sleep(5);
  } while (rc == SQLITE_OK || rc == SQLITE_BUSY || rc == SQLITE_LOCKED);
  int pages = sqlite3_backup_pagecount(b);
  sqlite3_backup_finish(b);
  sqlite3_close_v2(dest);
  to->db = NULL;
  if (rc != SQLITE_DONE) {
    lua_pushnil(L);
    lua_pushstring(L, sqlite3_errstr(rc));
    return 2;
  }
  lua_pushinteger(L, pages);
  return 1;
}

/* A backup in steps, for progress: the caller steps it and reads how many
 * pages remain.  The source's snapshot is consistent when the caller holds
 * a read transaction on it across the steps (WAL: writers go on meanwhile);
 * otherwise a write by another connection restarts it.  The destination is
 * a new file written without a journal (a backup that did not finish is
 * never used: write it under a temporary name, rename when done).
 * The destination starts with 64 KiB pages: SQLite then copies the source
 * (the node's pages are 1 KiB) into it in 64 KiB writes, and the file ends
 * as the source's own page size — about 7x faster than page by page
 * (a non-WAL destination may have another page size: sqlite3_backup_step). */
typedef struct {
  sqlite3 *dest;
  sqlite3_backup *b;
  int rc; /* the last step's result */
} backup_t;

static int backup_close(backup_t *bk) {
  int rc = SQLITE_OK;
  if (bk->b) rc = sqlite3_backup_finish(bk->b);
  bk->b = NULL;
  if (bk->dest) sqlite3_close_v2(bk->dest);
  bk->dest = NULL;
  return rc;
}

static int backup_gc(lua_State *L) {
  backup_close(luaL_checkudata(L, 1, BACKUP_MT));
  return 0;
}

static int l_backup_start(lua_State *L) {
  db_t *d = check_db(L);
  const char *path = luaL_checkstring(L, 2);
  backup_t *bk = lua_newuserdatauv(L, sizeof *bk, 0);
  memset(bk, 0, sizeof *bk);
  luaL_setmetatable(L, BACKUP_MT);
  const char *err = NULL;
  if (sqlite3_open_v2(path, &bk->dest, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) !=
          SQLITE_OK ||
      sqlite3_exec(bk->dest,
                   "PRAGMA page_size=65536; PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
                   "CREATE TABLE aitbc_backup_page_size(x); DROP TABLE aitbc_backup_page_size;",
                   NULL, NULL, NULL) != SQLITE_OK)
    err = bk->dest ? sqlite3_errmsg(bk->dest) : "out of memory";
  else if (!(bk->b = sqlite3_backup_init(bk->dest, "main", d->db, "main")))
    err = sqlite3_errmsg(bk->dest);
  if (err) {
    lua_pushnil(L);
    lua_pushstring(L, err); /* copied before the connection goes */
    backup_close(bk);
    return 2;
  }
  return 1;
}

static int l_backup_step(lua_State *L) {
  backup_t *bk = luaL_checkudata(L, 1, BACKUP_MT);
  int pages = (int)luaL_optinteger(L, 2, 1024);
  luaL_argcheck(L, bk->b != NULL, 1, "the backup is finished");
  int rc = bk->rc = sqlite3_backup_step(bk->b, pages);
  if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_BUSY && rc != SQLITE_LOCKED) {
    lua_pushnil(L);
    lua_pushstring(L, sqlite3_errstr(rc));
    return 2;
  }
  lua_pushstring(L, rc == SQLITE_DONE ? "done" : rc == SQLITE_OK ? "more" : "busy");
  lua_pushinteger(L, sqlite3_backup_remaining(bk->b));
  lua_pushinteger(L, sqlite3_backup_pagecount(bk->b));
  return 3;
}

static int l_backup_finish(lua_State *L) {
  backup_t *bk = luaL_checkudata(L, 1, BACKUP_MT);
  int done = bk->rc == SQLITE_DONE;
  int rc = backup_close(bk);
  if (rc != SQLITE_OK || !done) {
    lua_pushnil(L);
    lua_pushstring(L, rc != SQLITE_OK ? sqlite3_errstr(rc) : "the backup was not complete");
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* limit(name [, value]) -> the previous value; without a value, only reads. */
static int l_limit(lua_State *L) {
  static const char *const names[] = {"length", "sql_length", "column", "variable_number", NULL};
  static const int ids[] = {SQLITE_LIMIT_LENGTH, SQLITE_LIMIT_SQL_LENGTH, SQLITE_LIMIT_COLUMN,
                            SQLITE_LIMIT_VARIABLE_NUMBER};
  db_t *d = check_db(L);
  int id = ids[luaL_checkoption(L, 2, NULL, names)];
  lua_Integer value = luaL_optinteger(L, 3, -1);
  luaL_argcheck(L, value >= -1 && value <= INT32_MAX, 3, "a limit is from 0 to 2^31-1");
  lua_pushinteger(L, sqlite3_limit(d->db, id, (int)value));
  return 1;
}

static int l_close(lua_State *L) {
  db_t *d = luaL_checkudata(L, 1, DB_MT);
  if (d->db) sqlite3_close_v2(d->db); /* v2: finalizes lazily with open statements */
  d->db = NULL;
  return 0;
}

/* ---- statements ---- */

static int bind_value(lua_State *L, sqlite3_stmt *st, int pos, int idx) {
  switch (lua_type(L, idx)) {
    case LUA_TNIL: return sqlite3_bind_null(st, pos);
    case LUA_TBOOLEAN: return sqlite3_bind_int(st, pos, lua_toboolean(L, idx));
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) return sqlite3_bind_int64(st, pos, lua_tointeger(L, idx));
      return sqlite3_bind_double(st, pos, lua_tonumber(L, idx));
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      return sqlite3_bind_text64(st, pos, s, len, SQLITE_TRANSIENT, SQLITE_UTF8);
    }
    case LUA_TUSERDATA: {
      if (luaL_testudata(L, idx, BLOB_MT)) {
        lua_getiuservalue(L, idx, 1);
        size_t len;
        const char *s = lua_tolstring(L, -1, &len);
        int rc = sqlite3_bind_blob64(st, pos, s, len, SQLITE_TRANSIENT);
        lua_pop(L, 1);
        return rc;
      }
    }
    /* fallthrough */
    default: return luaL_error(L, "cannot bind a %s to parameter %d", luaL_typename(L, idx), pos);
  }
}

/* A value SQLite refused (too big, out of memory): nil, message naming the
 * parameter, code; the statement is left with no values bound. */
static int push_bind_error(lua_State *L, stmt_t *s, int pos, int rc) {
  const char *name = sqlite3_bind_parameter_name(s->stmt, pos);
  sqlite3_clear_bindings(s->stmt);
  lua_pushnil(L);
  if (name)
    lua_pushfstring(L, "cannot bind parameter %s (#%d): %s", name, pos, sqlite3_errstr(rc));
  else
    lua_pushfstring(L, "cannot bind parameter #%d: %s", pos, sqlite3_errstr(rc));
  lua_pushinteger(L, rc);
  return 3;
}

static int l_bind(lua_State *L) {
  stmt_t *s = check_stmt(L);
  sqlite3_reset(s->stmt);
  sqlite3_clear_bindings(s->stmt);
  if (lua_istable(L, 2) && !luaL_testudata(L, 2, BLOB_MT)) {
    int n = sqlite3_bind_parameter_count(s->stmt);
    for (int i = 1; i <= n; i++) {
      const char *name = sqlite3_bind_parameter_name(s->stmt, i);
      if (!name) luaL_error(L, "parameter %d has no name; bind positionally", i);
      lua_getfield(L, 2, name + 1); /* skip the ':' / '@' / '$' */
      int rc = bind_value(L, s->stmt, i, -1);
      if (rc != SQLITE_OK) return push_bind_error(L, s, i, rc);
      lua_pop(L, 1);
    }
  } else {
    int n = lua_gettop(L) - 1;
    if (n != sqlite3_bind_parameter_count(s->stmt))
      luaL_error(L, "statement takes %d parameters, got %d", sqlite3_bind_parameter_count(s->stmt), n);
    for (int i = 1; i <= n; i++) {
      int rc = bind_value(L, s->stmt, i, i + 1);
      if (rc != SQLITE_OK) return push_bind_error(L, s, i, rc);
    }
  }
  lua_settop(L, 1);
  return 1;
}

static void push_column(lua_State *L, sqlite3_stmt *st, int i) {
  switch (sqlite3_column_type(st, i)) {
    case SQLITE_INTEGER: lua_pushinteger(L, sqlite3_column_int64(st, i)); break;
    case SQLITE_FLOAT: lua_pushnumber(L, sqlite3_column_double(st, i)); break;
    case SQLITE_NULL: lua_pushnil(L); break;
    default: {
      const void *p = sqlite3_column_blob(st, i);
      lua_pushlstring(L, p ? p : "", (size_t)sqlite3_column_bytes(st, i));
    }
  }
}

static int l_step(lua_State *L) {
  stmt_t *s = check_stmt(L);
  int rc = sqlite3_step(s->stmt);
  if (rc == SQLITE_DONE) {
    sqlite3_reset(s->stmt);
    lua_pushboolean(L, 0);
    return 1;
  }
  if (rc != SQLITE_ROW) {
    int n = push_error(L, s->db);
    sqlite3_reset(s->stmt);
    return n;
  }
  int cols = sqlite3_column_count(s->stmt);
  lua_createtable(L, 0, cols);
  for (int i = 0; i < cols; i++) {
    push_column(L, s->stmt, i);
    lua_setfield(L, -2, sqlite3_column_name(s->stmt, i));
  }
  return 1;
}

static int l_reset(lua_State *L) {
  sqlite3_reset(check_stmt(L)->stmt);
  lua_settop(L, 1);
  return 1;
}

static int l_finalize(lua_State *L) {
  stmt_t *s = luaL_checkudata(L, 1, STMT_MT);
  sqlite3_finalize(s->stmt);
  s->stmt = NULL;
  return 0;
}

static int l_blob(lua_State *L) {
  luaL_checkstring(L, 1);
  lua_newuserdatauv(L, 0, 1);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  luaL_setmetatable(L, BLOB_MT);
  return 1;
}

int luaopen_aitbc_native_db(lua_State *L) {
  static const luaL_Reg db_methods[] = {
      {"exec", l_exec},     {"prepare", l_prepare}, {"changes", l_changes}, {"last_insert_id", l_last_insert_id},
      {"backup", l_backup}, {"limit", l_limit},     {"close", l_close},     {"backup_start", l_backup_start},
      {NULL, NULL}};
  static const luaL_Reg stmt_methods[] = {
      {"bind", l_bind}, {"step", l_step}, {"reset", l_reset}, {"finalize", l_finalize}, {NULL, NULL}};
  luaL_newmetatable(L, DB_MT);
  luaL_newlib(L, db_methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, l_close);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, l_close);
  lua_setfield(L, -2, "__close");
  luaL_newmetatable(L, STMT_MT);
  luaL_newlib(L, stmt_methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, l_finalize);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, l_finalize);
  lua_setfield(L, -2, "__close");
  luaL_newmetatable(L, BLOB_MT);
  luaL_newmetatable(L, BACKUP_MT);
  lua_createtable(L, 0, 2);
  lua_pushcfunction(L, l_backup_step);
  lua_setfield(L, -2, "step");
  lua_pushcfunction(L, l_backup_finish);
  lua_setfield(L, -2, "finish");
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, backup_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 4);
  lua_newtable(L);
  lua_pushcfunction(L, l_open);
  lua_setfield(L, -2, "open");
  lua_pushcfunction(L, l_blob);
  lua_setfield(L, -2, "blob");
  lua_pushstring(L, sqlite3_libversion());
  lua_setfield(L, -2, "sqlite_version");
  return 1;
}
