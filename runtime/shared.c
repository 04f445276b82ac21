/* What Lua states on different threads share (part of aitbc.native.sys):
 * named mutexes, counters, queues of strings with a commit watermark,
 * keyed notifications, and threads that run a Lua module in a state of
 * their own.  Server workers, the supervisor and background writers each
 * have their own state; these are how they coordinate.
 *
 *   mutex(name) -> m; m:lock(); m:unlock()
 *   counter_add(key [, n]); counters() -> {key = value}
 *   queue_push(name, text) -> seq | false (full)
 *   queue_drain(name [, max]) -> {text...}, last_seq
 *   queue_take(name, max, timeout) -> {text...}, last_seq | nil (closed and empty)
 *   queue_commit(name, seq)            everything up to seq is durable
 *   queue_committed(name) -> seq
 *   queue_sync(name, timeout) -> true once what was pushed so far is committed
 *   queue_close(name)
 *   notify([key [, "one"]])  wakes waiters (see server.c): all, all on key, or one on key
 *   thread(module, arg) -> t; t:join() -> true | nil, err */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aitbc.h"

#define THREAD_MT "aitbc.thread"
#define BATCH_MT "aitbc.queue_batch"

static void deadline_after(struct timespec *ts, double seconds) {
  clock_gettime(CLOCK_REALTIME, ts);
  if (seconds < 0) seconds = 0;
  time_t whole = (time_t)seconds;
  ts->tv_sec += whole;
  ts->tv_nsec += (long)((seconds - (double)whole) * 1e9);
  if (ts->tv_nsec >= 1000000000L) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000L;
  }
}

/* ---- listeners: notifications and commits reach the servers ---- */

typedef struct listener {
  aitbc_listener_fn fn;
  void *arg;
  struct listener *next;
} listener_t;

static pthread_mutex_t listener_lock = PTHREAD_MUTEX_INITIALIZER;
static listener_t *listeners;

int aitbc_listen(aitbc_listener_fn fn, void *arg) {
  listener_t *l = malloc(sizeof *l);
  if (!l) return -1;
  l->fn = fn, l->arg = arg;
  pthread_mutex_lock(&listener_lock);
  l->next = listeners;
  listeners = l;
  pthread_mutex_unlock(&listener_lock);
  return 0;
}

void aitbc_unlisten(aitbc_listener_fn fn, void *arg) {
  pthread_mutex_lock(&listener_lock);
  for (listener_t **p = &listeners; *p; p = &(*p)->next) {
    if ((*p)->fn == fn && (*p)->arg == arg) {
      listener_t *l = *p;
      *p = l->next;
      free(l);
      break;
    }
  }
  pthread_mutex_unlock(&listener_lock);
}

/* Listeners only queue the event and wake their own thread: they never
 * call back into here, so holding the lock while calling them is safe. */
static void emit(int kind, const char *key, int one) {
  pthread_mutex_lock(&listener_lock);
  for (listener_t *l = listeners; l; l = l->next) l->fn(l->arg, kind, key, one);
  pthread_mutex_unlock(&listener_lock);
}

/* notify([key [, "one"]]) */
static int l_notify(lua_State *L) {
  const char *key = luaL_optstring(L, 1, NULL);
  int one = lua_isstring(L, 2) && strcmp(lua_tostring(L, 2), "one") == 0;
  luaL_argcheck(L, !one || key, 1, "notifying one waiter needs a key");
  emit(AITBC_EVENT_NOTIFY, key, one);
  return 0;
}

/* ---- named mutexes ---- */

typedef struct named_mutex {
  char *name;
  pthread_mutex_t mutex;
  struct named_mutex *next;
} named_mutex_t;

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static named_mutex_t *mutexes;

static named_mutex_t *mutex_find(const char *name) {
  pthread_mutex_lock(&registry_lock);
  named_mutex_t *m = mutexes;
  while (m && strcmp(m->name, name) != 0) m = m->next;
  if (!m && (m = calloc(1, sizeof *m))) {
    if ((m->name = strdup(name))) {
      pthread_mutex_init(&m->mutex, NULL);
      m->next = mutexes;
      mutexes = m;
    } else {
      free(m);
      m = NULL;
    }
  }
  pthread_mutex_unlock(&registry_lock);
  return m;
}

/* mutex(name) -> a process-wide mutex, the same one for the same name */
static int l_mutex(lua_State *L) {
  named_mutex_t **ud = lua_newuserdatauv(L, sizeof *ud, 0);
  if (!(*ud = mutex_find(luaL_checkstring(L, 1)))) return luaL_error(L, "out of memory");
  luaL_setmetatable(L, "aitbc.mutex");
  return 1;
}

static int l_mutex_lock(lua_State *L) {
  pthread_mutex_lock(&(*(named_mutex_t **)luaL_checkudata(L, 1, "aitbc.mutex"))->mutex);
  return 0;
}

static int l_mutex_unlock(lua_State *L) {
  pthread_mutex_unlock(&(*(named_mutex_t **)luaL_checkudata(L, 1, "aitbc.mutex"))->mutex);
  return 0;
}

/* ---- queues ---- */

#define QUEUE_MAX_ITEMS 1000000
typedef struct qitem {
  struct qitem *next;
  uint64_t seq;
  size_t len;
  char data[];
} qitem_t;
typedef struct queue {
  char *name;
  qitem_t *head, *tail;
  size_t count;
  uint64_t pushed, committed;
  int closed;
  pthread_cond_t changed; /* items arrived, a commit, or closed */
  struct queue *next;
} queue_t;
static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;
static queue_t *queues;

static queue_t *queue_find(const char *name) { /* queue_lock held */
  queue_t *q = queues;
  while (q && strcmp(q->name, name) != 0) q = q->next;
  if (!q && (q = calloc(1, sizeof *q))) {
    if (!(q->name = strdup(name))) {
      free(q);
      return NULL;
    }
    pthread_cond_init(&q->changed, NULL);
    q->next = queues;
    queues = q;
  }
  return q;
}

uint64_t aitbc_queue_push(const char *name, const char *data, size_t len) {
  qitem_t *item = malloc(sizeof *item + len);
  if (!item) return 0;
  item->next = NULL;
  item->len = len;
  memcpy(item->data, data, len);
  pthread_mutex_lock(&queue_lock);
  queue_t *q = queue_find(name);
  uint64_t seq = 0;
  if (q && q->count < QUEUE_MAX_ITEMS) {
    seq = item->seq = ++q->pushed;
    if (q->tail)
      q->tail->next = item;
    else
      q->head = item;
    q->tail = item;
    q->count++;
    pthread_cond_broadcast(&q->changed);
  }
  pthread_mutex_unlock(&queue_lock);
  if (!seq) free(item);
  return seq;
}

uint64_t aitbc_queue_committed(const char *name) {
  pthread_mutex_lock(&queue_lock);
  queue_t *q = queue_find(name);
  uint64_t seq = q ? q->committed : 0;
  pthread_mutex_unlock(&queue_lock);
  return seq;
}

static int l_queue_push(lua_State *L) {
  size_t len;
  const char *name = luaL_checkstring(L, 1);
  const char *text = luaL_checklstring(L, 2, &len);
  uint64_t seq = aitbc_queue_push(name, text, len);
  if (seq)
    lua_pushinteger(L, (lua_Integer)seq);
  else
    lua_pushboolean(L, 0);
  return 1;
}

/* Items taken off a queue are owned by a batch until they are in Lua: if
 * building the table raises, __gc puts them back at the queue's head. */
typedef struct {
  char *queue;
  qitem_t *head;
} batch_t;

static int batch_gc(lua_State *L) {
  batch_t *b = lua_touserdata(L, 1);
  if (b->head) {
    qitem_t *last = b->head;
    size_t n = 1;
    for (; last->next; n++) last = last->next;
    pthread_mutex_lock(&queue_lock);
    queue_t *q = queue_find(b->queue);
    if (q) {
      last->next = q->head;
      q->head = b->head;
      if (!q->tail) q->tail = last;
      q->count += n;
      b->head = NULL;
    }
    pthread_mutex_unlock(&queue_lock);
    for (qitem_t *i = b->head, *next; i; i = next) next = i->next, free(i);
    b->head = NULL;
  }
  free(b->queue);
  b->queue = NULL;
  return 0;
}

static qitem_t *take_locked(queue_t *q, lua_Integer max, lua_Integer *n) {
  qitem_t *taken = q->head, *last = taken;
  *n = 0;
  if (!taken) return NULL;
  for (*n = 1; *n < max && last->next; (*n)++) last = last->next;
  q->head = last->next;
  if (!q->head) q->tail = NULL;
  q->count -= (size_t)*n;
  last->next = NULL;
  return taken;
}

/* Pushes {text...}, last_seq for the items the batch at index holds, then
 * frees them. */
static int push_batch(lua_State *L, int index, lua_Integer n) {
  batch_t *b = lua_touserdata(L, index);
  lua_createtable(L, (int)n, 0);
  lua_Integer i = 0;
  uint64_t last = 0;
  for (qitem_t *it = b->head; it; it = it->next) {
    lua_pushlstring(L, it->data, it->len);
    lua_rawseti(L, -2, ++i);
    last = it->seq;
  }
  for (qitem_t *it = b->head, *next; it; it = next) next = it->next, free(it);
  b->head = NULL;
  lua_pushinteger(L, (lua_Integer)last);
  return 2;
}

static batch_t *new_batch(lua_State *L, const char *name) {
  batch_t *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->head = NULL;
  b->queue = NULL;
  luaL_setmetatable(L, BATCH_MT);
  if (!(b->queue = strdup(name))) luaL_error(L, "out of memory");
  return b;
}

static int l_queue_drain(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  lua_Integer max = luaL_optinteger(L, 2, QUEUE_MAX_ITEMS), n = 0;
  batch_t *b = new_batch(L, name);
  pthread_mutex_lock(&queue_lock);
  queue_t *q = queue_find(name);
  if (q) b->head = take_locked(q, max, &n);
  pthread_mutex_unlock(&queue_lock);
  return push_batch(L, lua_gettop(L), n);
}

static int l_queue_take(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  lua_Integer max = luaL_checkinteger(L, 2), n = 0;
  struct timespec until;
  deadline_after(&until, luaL_checknumber(L, 3));
  batch_t *b = new_batch(L, name);
  pthread_mutex_lock(&queue_lock);
  queue_t *q = queue_find(name);
  while (q && !q->head && !q->closed && pthread_cond_timedwait(&q->changed, &queue_lock, &until) == 0) {
  }
  int closed = q && !q->head && q->closed;
  if (q) b->head = take_locked(q, max, &n);
  pthread_mutex_unlock(&queue_lock);
  if (closed) {
    lua_pushnil(L);
    return 1;
  }
  return push_batch(L, lua_gettop(L), n);
}

static int l_queue_commit(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  uint64_t seq = (uint64_t)luaL_checkinteger(L, 2);
  pthread_mutex_lock(&queue_lock);
  queue_t *q = queue_find(name);
  if (q && seq > q->committed) q->committed = seq;
  if (q) pthread_cond_broadcast(&q->changed);
  pthread_mutex_unlock(&queue_lock);
  emit(AITBC_EVENT_COMMIT, name, 0);
  return 0;
}

static int l_queue_committed(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)aitbc_queue_committed(luaL_checkstring(L, 1)));
  return 1;
}

static int l_queue_sync(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  struct timespec until;
  deadline_after(&until, luaL_checknumber(L, 2));
  pthread_mutex_lock(&queue_lock);
  queue_t *q = queue_find(name);
  uint64_t target = q ? q->pushed : 0;
  while (q && q->committed < target && !q->closed && pthread_cond_timedwait(&q->changed, &queue_lock, &until) == 0) {
  }
  int ok = !q || q->committed >= target;
  pthread_mutex_unlock(&queue_lock);
  lua_pushboolean(L, ok);
  return 1;
}

static int l_queue_close(lua_State *L) {
  pthread_mutex_lock(&queue_lock);
  queue_t *q = queue_find(luaL_checkstring(L, 1));
  if (q) {
    q->closed = 1;
    pthread_cond_broadcast(&q->changed);
  }
  pthread_mutex_unlock(&queue_lock);
  return 0;
}

/* ---- counters ---- */

#define COUNTER_BUCKETS 1024
#define COUNTER_MAX 100000
typedef struct counter {
  char *key;
  double value;
  struct counter *next;
} counter_t;
static pthread_mutex_t counter_lock = PTHREAD_MUTEX_INITIALIZER;
static counter_t *counters[COUNTER_BUCKETS];
static size_t counter_count;

static unsigned hash_key(const char *s, size_t len) {
  unsigned h = 2166136261u;
  for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
  return h % COUNTER_BUCKETS;
}

/* Adds n to a counter, or sets it (a gauge) when set is true. */
void aitbc_counter_update(const char *key, double n, int set) {
  size_t len = strlen(key);
  unsigned h = hash_key(key, len);
  pthread_mutex_lock(&counter_lock);
  counter_t *c = counters[h];
  while (c && strcmp(c->key, key) != 0) c = c->next;
  if (!c && counter_count < COUNTER_MAX && (c = calloc(1, sizeof *c))) {
    if ((c->key = strdup(key))) {
      c->next = counters[h];
      counters[h] = c;
      counter_count++;
    } else {
      free(c);
      c = NULL;
    }
  }
  if (c) c->value = set ? n : c->value + n;
  pthread_mutex_unlock(&counter_lock);
}

/* counter_add(key, n=1): a process-wide counter (metrics across workers) */
static int l_counter_add(lua_State *L) {
  aitbc_counter_update(luaL_checkstring(L, 1), luaL_optnumber(L, 2, 1), 0);
  return 0;
}

/* counters() -> {key = value}: copied under the lock, pushed after it (a
 * push can raise, and must not do so while the lock is held). */
typedef struct {
  size_t n;
  char **keys;
  double *values;
} snapshot_t;

static int snapshot_gc(lua_State *L) {
  snapshot_t *s = lua_touserdata(L, 1);
  for (size_t i = 0; i < s->n; i++) free(s->keys[i]);
  free(s->keys), free(s->values);
  s->keys = NULL, s->values = NULL, s->n = 0;
  return 0;
}

static int l_counters(lua_State *L) {
  snapshot_t *s = lua_newuserdatauv(L, sizeof *s, 0);
  memset(s, 0, sizeof *s);
  lua_createtable(L, 0, 2);
  lua_pushcfunction(L, snapshot_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  pthread_mutex_lock(&counter_lock);
  size_t cap = counter_count;
  s->keys = calloc(cap ? cap : 1, sizeof *s->keys);
  s->values = calloc(cap ? cap : 1, sizeof *s->values);
  for (int i = 0; s->keys && s->values && i < COUNTER_BUCKETS; i++)
    for (counter_t *c = counters[i]; c && s->n < cap; c = c->next) {
      if (!(s->keys[s->n] = strdup(c->key))) break;
      s->values[s->n++] = c->value;
    }
  pthread_mutex_unlock(&counter_lock);
  if (!s->keys || !s->values) return luaL_error(L, "out of memory");
  lua_createtable(L, 0, (int)s->n);
  for (size_t i = 0; i < s->n; i++) {
    lua_pushnumber(L, s->values[i]);
    lua_setfield(L, -2, s->keys[i]);
  }
  return 1;
}

/* ---- threads running a Lua module ---- */

typedef struct {
  pthread_t tid;
  char *module, *arg, *path, *cpath;
  char *error; /* set by the thread when the module failed */
  int started, joined;
} thread_t;

static void *thread_main(void *p) {
  thread_t *t = p;
  lua_State *L = luaL_newstate();
  if (!L) {
    t->error = strdup("out of memory");
    return NULL;
  }
  aitbc_host_init(L);
  lua_getglobal(L, "package");
  lua_pushstring(L, t->path);
  lua_setfield(L, -2, "path");
  lua_pushstring(L, t->cpath);
  lua_setfield(L, -2, "cpath");
  lua_pop(L, 1);
  lua_getglobal(L, "require");
  lua_pushstring(L, t->module);
  int rc = lua_pcall(L, 1, 1, 0);
  if (rc == LUA_OK) {
    lua_pushstring(L, t->arg);
    rc = lua_pcall(L, 1, 0, 0);
  }
  if (rc != LUA_OK) t->error = strdup(lua_isstring(L, -1) ? lua_tostring(L, -1) : "the thread's module failed");
  lua_close(L);
  return NULL;
}

static void thread_free_strings(thread_t *t) {
  free(t->module), free(t->arg), free(t->path), free(t->cpath), free(t->error);
  t->module = t->arg = t->path = t->cpath = t->error = NULL;
}

static int thread_gc(lua_State *L) {
  thread_t *t = lua_touserdata(L, 1);
  if (t->started && !t->joined) {
    pthread_join(t->tid, NULL); /* its strings are in use until it ends */
    t->joined = 1;
  }
  thread_free_strings(t);
  return 0;
}

static char *field_dup(lua_State *L, const char *table, const char *field) {
  lua_getglobal(L, table);
  lua_getfield(L, -1, field);
  char *s = strdup(lua_isstring(L, -1) ? lua_tostring(L, -1) : "");
  lua_pop(L, 2);
  return s;
}

static int l_thread(lua_State *L) {
  const char *module = luaL_checkstring(L, 1);
  const char *arg = luaL_optstring(L, 2, "");
  thread_t *t = lua_newuserdatauv(L, sizeof *t, 0);
  memset(t, 0, sizeof *t);
  luaL_setmetatable(L, THREAD_MT);
  t->module = strdup(module);
  t->arg = strdup(arg);
  t->path = field_dup(L, "package", "path");
  t->cpath = field_dup(L, "package", "cpath");
  if (!t->module || !t->arg || !t->path || !t->cpath) return luaL_error(L, "out of memory");
  sigset_t block, old; /* signals stay with the main thread */
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  sigaddset(&block, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &block, &old);
  int rc = pthread_create(&t->tid, NULL, thread_main, t);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    lua_pushnil(L);
    lua_pushstring(L, "cannot start a thread");
    return 2;
  }
  t->started = 1;
  return 1;
}

static int l_thread_join(lua_State *L) {
  thread_t *t = luaL_checkudata(L, 1, THREAD_MT);
  if (t->started && !t->joined) {
    pthread_join(t->tid, NULL);
    t->joined = 1;
  }
  if (t->error) {
    lua_pushnil(L);
    lua_pushstring(L, t->error);
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

const luaL_Reg aitbc_shared_funcs[] = {{"mutex", l_mutex},
                                       {"notify", l_notify},
                                       {"counter_add", l_counter_add},
                                       {"counters", l_counters},
                                       {"queue_push", l_queue_push},
                                       {"queue_drain", l_queue_drain},
                                       {"queue_take", l_queue_take},
                                       {"queue_commit", l_queue_commit},
                                       {"queue_committed", l_queue_committed},
                                       {"queue_sync", l_queue_sync},
                                       {"queue_close", l_queue_close},
                                       {"thread", l_thread},
                                       {NULL, NULL}};

void aitbc_shared_metatables(lua_State *L) {
  static const luaL_Reg mutex_methods[] = {{"lock", l_mutex_lock}, {"unlock", l_mutex_unlock}, {NULL, NULL}};
  luaL_newmetatable(L, "aitbc.mutex");
  luaL_newlib(L, mutex_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newmetatable(L, BATCH_MT);
  lua_pushcfunction(L, batch_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newmetatable(L, THREAD_MT);
  lua_pushcfunction(L, thread_gc);
  lua_setfield(L, -2, "__gc");
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, l_thread_join);
  lua_setfield(L, -2, "join");
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}
