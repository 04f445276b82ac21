/* Metered Lua patterns for the sandbox (see lpattern.h).  The language is
 * Lua 5.4's (§6.4.1 of its manual): classes, sets, the quantifiers * + - ?,
 * anchors, captures and position captures, %b, %f and back-references; the
 * functions behave as string.find/match/gmatch/gsub do, including their
 * error messages.  Every matching step is charged to the sandbox's meter, so
 * a pattern that backtracks without end stops at the sandbox's limits. */
#include "lpattern.h"

#include <ctype.h>
#include <lauxlib.h>
#include <string.h>

#define MAX_CAPTURES 32
#define CAP_OPEN (-1)     /* a capture not closed yet */
#define CAP_POSITION (-2) /* () */
#define MAX_DEPTH 200     /* nested matching calls ("pattern too complex" beyond) */
#define STEP_BATCH 1024   /* steps charged at a time */

typedef struct {
  const char *src, *src_end, *pat_end;
  lua_State *L;
  int depth, level;
  struct {
    const char *init;
    ptrdiff_t len;
  } cap[MAX_CAPTURES];
  long steps;
  lpattern_meter meter;
  void *arg;
} match_t;

typedef struct {
  lpattern_meter meter;
  void *arg;
} meter_t;

static void charge(match_t *m, long n) {
  m->steps += n;
  if (m->steps >= STEP_BATCH) {
    long due = m->steps;
    m->steps = 0;
    m->meter(m->L, m->arg, due);
  }
}

/* ---- single characters, classes and sets ---- */

static int class_has(int c, int cl) {
  int r;
  switch (tolower(cl)) {
    case 'a': r = isalpha(c); break;
    case 'c': r = iscntrl(c); break;
    case 'd': r = isdigit(c); break;
    case 'g': r = isgraph(c); break;
    case 'l': r = islower(c); break;
    case 'p': r = ispunct(c); break;
    case 's': r = isspace(c); break;
    case 'u': r = isupper(c); break;
    case 'w': r = isalnum(c); break;
    case 'x': r = isxdigit(c); break;
    case 'z': r = c == 0; break; /* deprecated, but Lua 5.4 still has it */
    default: return cl == c;     /* %x for a non-letter x: x itself */
  }
  r = r != 0;
  return isupper(cl) ? !r : r;
}

/* The end of the single-character class starting at p. */
static const char *class_end(match_t *m, const char *p) {
  char c = *p++;
  if (c == '%') {
    if (p >= m->pat_end) luaL_error(m->L, "malformed pattern (ends with '%%')");
    return p + 1;
  }
  if (c == '[') {
    if (p < m->pat_end && *p == '^') p++;
    do { /* the first character is part of the set, even a ']' */
      if (p >= m->pat_end) luaL_error(m->L, "malformed pattern (missing ']')");
      c = *p++;
      if (c == '%' && p < m->pat_end) p++;
    } while (p >= m->pat_end || *p != ']');
    return p + 1;
  }
  return p;
}

/* Is c in the set [ ... ] from p (at '[') to end (at ']')? */
static int set_has(int c, const char *p, const char *end) {
  int in = 1;
  if (*++p == '^') {
    in = 0;
    p++;
  }
  for (; p < end; p++) {
    if (*p == '%') {
      if (class_has(c, (unsigned char)*++p)) return in;
    } else if (p[1] == '-' && p + 2 < end) {
      if ((unsigned char)p[0] <= c && c <= (unsigned char)p[2]) return in;
      p += 2;
    } else if ((unsigned char)*p == c) {
      return in;
    }
  }
  return !in;
}

static int single_match(match_t *m, const char *s, const char *p, const char *ep) {
  if (s >= m->src_end) return 0;
  int c = (unsigned char)*s;
  switch (*p) {
    case '.': return 1;
    case '%': return class_has(c, (unsigned char)p[1]);
    case '[': return set_has(c, p, ep - 1);
    default: return (unsigned char)*p == c;
  }
}

/* ---- matching ---- */

static const char *match(match_t *m, const char *s, const char *p);

static const char *max_expand(match_t *m, const char *s, const char *p, const char *ep) {
  ptrdiff_t i = 0;
  while (single_match(m, s + i, p, ep)) i++;
  charge(m, i);
  for (; i >= 0; i--) {
    const char *r = match(m, s + i, ep + 1);
    if (r) return r;
  }
  return NULL;
}

static const char *min_expand(match_t *m, const char *s, const char *p, const char *ep) {
  for (;;) {
    const char *r = match(m, s, ep + 1);
    if (r) return r;
    if (!single_match(m, s, p, ep)) return NULL;
    s++;
    charge(m, 1);
  }
}

static const char *start_capture(match_t *m, const char *s, const char *p, ptrdiff_t what) {
  if (m->level >= MAX_CAPTURES) luaL_error(m->L, "too many captures");
  m->cap[m->level].init = s;
  m->cap[m->level].len = what;
  m->level++;
  const char *r = match(m, s, p);
  if (!r) m->level--;
  return r;
}

static const char *end_capture(match_t *m, const char *s, const char *p) {
  int l = m->level - 1;
  while (l >= 0 && m->cap[l].len != CAP_OPEN) l--;
  if (l < 0) luaL_error(m->L, "invalid pattern capture");
  m->cap[l].len = s - m->cap[l].init;
  const char *r = match(m, s, p);
  if (!r) m->cap[l].len = CAP_OPEN;
  return r;
}

static const char *match_balance(match_t *m, const char *s, const char *p) {
  if (p + 1 >= m->pat_end) luaL_error(m->L, "malformed pattern (missing arguments to '%%b')");
  if (s >= m->src_end || *s != *p) return NULL;
  char open = p[0], close = p[1];
  int depth = 1;
  const char *start = s;
  while (++s < m->src_end) {
    if (*s == close) {
      if (--depth == 0) {
        charge(m, s - start);
        return s + 1;
      }
    } else if (*s == open) {
      depth++;
    }
  }
  charge(m, s - start);
  return NULL;
}

static int capture_index(match_t *m, int c) {
  int l = c - '1';
  if (l < 0 || l >= m->level || m->cap[l].len == CAP_OPEN) luaL_error(m->L, "invalid capture index %%%d", l + 1);
  return l;
}

static const char *match_capture(match_t *m, const char *s, int c) {
  int l = capture_index(m, c);
  size_t len = (size_t)m->cap[l].len;
  if ((size_t)(m->src_end - s) >= len && memcmp(m->cap[l].init, s, len) == 0) return s + len;
  return NULL;
}

static const char *match_frontier(match_t *m, const char *s, const char **p) {
  if (**p != '[') luaL_error(m->L, "missing '[' after '%%f' in pattern");
  const char *ep = class_end(m, *p);
  int before = s == m->src ? 0 : (unsigned char)s[-1];
  int here = s < m->src_end ? (unsigned char)*s : 0;
  if (set_has(before, *p, ep - 1) || !set_has(here, *p, ep - 1)) return NULL;
  *p = ep;
  return s;
}

/* One character class with its quantifier, if any; NULL on no match, or
 * the rest of the match. */
static const char *match_class(match_t *m, const char *s, const char *p, int *again, const char **next_p) {
  const char *ep = class_end(m, p);
  *again = 0;
  if (!single_match(m, s, p, ep)) {
    if (*ep == '*' || *ep == '?' || *ep == '-') { /* zero of them will do */
      *next_p = ep + 1;
      *again = 1;
      return s;
    }
    return NULL;
  }
  switch (*ep) {
    case '?': {
      const char *r = match(m, s + 1, ep + 1);
      if (r) return r;
      *next_p = ep + 1;
      *again = 1;
      return s;
    }
    case '+': return max_expand(m, s + 1, p, ep);
    case '*': return max_expand(m, s, p, ep);
    case '-': return min_expand(m, s, p, ep);
    default:
      *next_p = ep;
      *again = 1;
      return s + 1;
  }
}

static const char *match(match_t *m, const char *s, const char *p) {
  if (m->depth-- == 0) luaL_error(m->L, "pattern too complex");
  charge(m, 1);
  while (s && p < m->pat_end) {
    int again = 0;
    if (*p == '(') {
      s = p + 1 < m->pat_end && p[1] == ')' ? start_capture(m, s, p + 2, CAP_POSITION)
                                            : start_capture(m, s, p + 1, CAP_OPEN);
    } else if (*p == ')') {
      s = end_capture(m, s, p + 1);
    } else if (*p == '$' && p + 1 == m->pat_end) {
      s = s == m->src_end ? s : NULL;
      p++;
      again = s != NULL;
    } else if (*p == '%' && p + 1 < m->pat_end && p[1] == 'b') {
      s = match_balance(m, s, p + 2);
      p += 4;
      again = s != NULL;
    } else if (*p == '%' && p + 1 < m->pat_end && p[1] == 'f') {
      p += 2;
      s = match_frontier(m, s, &p);
      again = s != NULL;
    } else if (*p == '%' && p + 1 < m->pat_end && isdigit((unsigned char)p[1])) {
      s = match_capture(m, s, (unsigned char)p[1]);
      p += 2;
      again = s != NULL;
    } else {
      const char *next_p = p;
      s = match_class(m, s, p, &again, &next_p);
      p = next_p;
    }
    if (!again) break;
  }
  m->depth++;
  return s;
}

/* ---- captures into Lua values ---- */

static void push_capture(match_t *m, int i, const char *s, const char *e) {
  if (i >= m->level) {
    if (i != 0) luaL_error(m->L, "invalid capture index %%%d", i + 1);
    lua_pushlstring(m->L, s, (size_t)(e - s)); /* no captures: the whole match */
    return;
  }
  ptrdiff_t len = m->cap[i].len;
  if (len == CAP_OPEN) luaL_error(m->L, "unfinished capture");
  if (len == CAP_POSITION)
    lua_pushinteger(m->L, (m->cap[i].init - m->src) + 1);
  else
    lua_pushlstring(m->L, m->cap[i].init, (size_t)len);
}

static int push_captures(match_t *m, const char *s, const char *e) {
  int n = m->level == 0 && s ? 1 : m->level;
  luaL_checkstack(m->L, n, "too many captures");
  for (int i = 0; i < n; i++) push_capture(m, i, s, e);
  return n;
}

/* ---- the four functions ---- */

static void prepare(match_t *m, lua_State *L, const char *s, size_t ls, const char *p, size_t lp) {
  meter_t *mt = lua_touserdata(L, lua_upvalueindex(1));
  m->L = L;
  m->src = s;
  m->src_end = s + ls;
  m->pat_end = p + lp;
  m->meter = mt->meter;
  m->arg = mt->arg;
  m->steps = 0;
  m->depth = MAX_DEPTH;
  m->level = 0;
}

static void restart(match_t *m) {
  m->level = 0;
  m->depth = MAX_DEPTH;
}

/* Lua 5.4's start position: 1-based, negative from the end. */
static size_t start_at(lua_Integer pos, size_t len) {
  if (pos > 0) return (size_t)pos;
  if (pos == 0) return 1;
  if (pos < -(lua_Integer)len) return 1;
  return len + (size_t)pos + 1;
}

static int has_specials(const char *p, size_t lp) {
  for (size_t i = 0; i < lp; i++)
    if (p[i] && strchr("^$*+?.([%-", p[i])) return 1;
  return 0;
}

static const char *find_plain(const char *s, size_t ls, const char *p, size_t lp) {
  if (lp == 0) return s;
  if (lp > ls) return NULL;
  return memmem(s, ls, p, lp);
}

static int find_or_match(lua_State *L, int find) {
  size_t ls, lp;
  const char *s = luaL_checklstring(L, 1, &ls);
  const char *p = luaL_checklstring(L, 2, &lp);
  size_t init = start_at(luaL_optinteger(L, 3, 1), ls) - 1;
  if (init > ls) {
    luaL_pushfail(L);
    return 1;
  }
  if (find && (lua_toboolean(L, 4) || !has_specials(p, lp))) {
    const char *at = find_plain(s + init, ls - init, p, lp);
    if (!at) {
      luaL_pushfail(L);
      return 1;
    }
    lua_pushinteger(L, (at - s) + 1);
    lua_pushinteger(L, (lua_Integer)((at - s) + (ptrdiff_t)lp));
    return 2;
  }
  match_t m;
  int anchor = lp > 0 && *p == '^';
  if (anchor) p++, lp--;
  prepare(&m, L, s, ls, p, lp);
  const char *s1 = s + init;
  do {
    restart(&m);
    const char *e = match(&m, s1, p);
    if (e) {
      if (!find) return push_captures(&m, s1, e);
      lua_pushinteger(L, (s1 - s) + 1);
      lua_pushinteger(L, e - s);
      return push_captures(&m, NULL, NULL) + 2;
    }
  } while (s1++ < m.src_end && !anchor);
  luaL_pushfail(L);
  return 1;
}

static int l_find(lua_State *L) { return find_or_match(L, 1); }
static int l_match(lua_State *L) { return find_or_match(L, 0); }

typedef struct {
  const char *src, *p, *last;
  match_t m;
} gmatch_t;

static int gmatch_next(lua_State *L) {
  gmatch_t *g = lua_touserdata(L, lua_upvalueindex(3));
  g->m.L = L;
  for (const char *s = g->src; s <= g->m.src_end; s++) {
    restart(&g->m);
    const char *e = match(&g->m, s, g->p);
    if (e && e != g->last) {
      g->src = g->last = e;
      return push_captures(&g->m, s, e);
    }
  }
  return 0;
}

static int l_gmatch(lua_State *L) {
  size_t ls, lp;
  const char *s = luaL_checklstring(L, 1, &ls);
  const char *p = luaL_checklstring(L, 2, &lp);
  size_t init = start_at(luaL_optinteger(L, 3, 1), ls) - 1;
  if (init > ls) init = ls + 1; /* no match at all */
  lua_settop(L, 2);
  gmatch_t *g = lua_newuserdatauv(L, sizeof *g, 0);
  prepare(&g->m, L, s, ls, p, lp);
  g->src = s + init;
  g->p = p;
  g->last = NULL;
  lua_pushcclosure(L, gmatch_next, 3); /* s and p stay alive as upvalues */
  return 1;
}

static void add_replacement_string(match_t *m, luaL_Buffer *b, const char *s, const char *e) {
  size_t l;
  lua_State *L = m->L;
  const char *r = lua_tolstring(L, 3, &l), *end = r + l;
  for (; r < end; r++) {
    const char *pct = memchr(r, '%', (size_t)(end - r));
    if (!pct) {
      luaL_addlstring(b, r, (size_t)(end - r));
      break;
    }
    luaL_addlstring(b, r, (size_t)(pct - r));
    r = pct + 1;
    if (r >= end || *r == '%') {
      if (r >= end) luaL_error(L, "invalid use of '%%' in replacement string");
      luaL_addchar(b, '%');
    } else if (*r == '0') {
      luaL_addlstring(b, s, (size_t)(e - s));
    } else if (isdigit((unsigned char)*r)) {
      push_capture(m, *r - '1', s, e);
      luaL_tolstring(L, -1, NULL);
      lua_remove(L, -2);
      luaL_addvalue(b);
    } else {
      luaL_error(L, "invalid use of '%%' in replacement string");
    }
  }
}

static void add_replacement(match_t *m, luaL_Buffer *b, const char *s, const char *e, int kind) {
  lua_State *L = m->L;
  if (kind == LUA_TSTRING || kind == LUA_TNUMBER) {
    add_replacement_string(m, b, s, e);
    return;
  }
  if (kind == LUA_TFUNCTION) {
    lua_pushvalue(L, 3);
    int n = push_captures(m, s, e);
    lua_call(L, n, 1);
  } else {
    push_capture(m, 0, s, e);
    lua_gettable(L, 3);
  }
  if (!lua_toboolean(L, -1)) { /* nil or false: keep the original text */
    lua_pop(L, 1);
    luaL_addlstring(b, s, (size_t)(e - s));
  } else if (!lua_isstring(L, -1)) {
    luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
  } else {
    luaL_addvalue(b);
  }
}

static int l_gsub(lua_State *L) {
  size_t ls, lp;
  const char *src = luaL_checklstring(L, 1, &ls);
  const char *p = luaL_checklstring(L, 2, &lp);
  int kind = lua_type(L, 3);
  lua_Integer max = luaL_optinteger(L, 4, (lua_Integer)ls + 1), n = 0;
  luaL_argexpected(L, kind == LUA_TNUMBER || kind == LUA_TSTRING || kind == LUA_TFUNCTION || kind == LUA_TTABLE, 3,
                   "string/function/table");
  int anchor = lp > 0 && *p == '^';
  if (anchor) p++, lp--;
  match_t m;
  prepare(&m, L, src, ls, p, lp);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  const char *last = NULL;
  while (n < max) {
    restart(&m);
    const char *e = match(&m, src, p);
    if (e && e != last) {
      n++;
      add_replacement(&m, &b, src, e, kind);
      src = last = e;
    } else if (src < m.src_end) {
      luaL_addchar(&b, *src++);
    } else {
      break;
    }
    if (anchor) break;
  }
  luaL_addlstring(&b, src, (size_t)(m.src_end - src));
  luaL_pushresult(&b);
  lua_pushinteger(L, n);
  return 2;
}

void lpattern_install(lua_State *L, lpattern_meter meter, void *arg) {
  static const luaL_Reg funcs[] = {
      {"find", l_find}, {"match", l_match}, {"gmatch", l_gmatch}, {"gsub", l_gsub}, {NULL, NULL}};
  meter_t *mt = lua_newuserdatauv(L, sizeof *mt, 0);
  mt->meter = meter;
  mt->arg = arg;
  luaL_setfuncs(L, funcs, 1);
}
