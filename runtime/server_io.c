/* The server's event loop, one thread over epoll: accepts connections (a cap
 * in all and per client address), reads and parses requests, hands complete
 * ones to the workers, writes their answers, keeps long polls waiting until
 * a notification or their time is up, holds answers until the queue commit
 * they depend on, and closes what is idle or too slow.  A connection belongs
 * to this thread except while a worker runs its handler (worker_owned). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server.h"

static char LISTEN_TAG, WAKE_TAG;

#define ADDR_BUCKETS 4096
#define WAKE_BUCKETS 4096
#define READ_CHUNK 16384
#define WRITE_TIMEOUT 30.0
#define LINGER_TIME 2.0
#define BODY_TIMEOUT 30.0
#define MAX_BATON_HOPS 64

struct addr_count {
  struct addr_count *next;
  int count;
  char addr[48];
};

typedef struct server_event {
  struct server_event *next;
  int kind, one, has_key;
  char key[];
} server_event_t;

static void process_input(conn_t *c);
static void start_write(conn_t *c);
static void stop_waiting(conn_t *c);

/* ---- epoll interest ---- */

static void watch(conn_t *c, uint32_t events) {
  server_t *srv = c->srv;
  if (events == c->events) return;
  struct epoll_event ev = {.events = events, .data.ptr = c};
  int op = !c->events ? EPOLL_CTL_ADD : !events ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
  if (epoll_ctl(srv->epoll_fd, op, c->fd, &ev) == 0 || op == EPOLL_CTL_DEL) c->events = events;
}

/* ---- connections per client address ---- */

static unsigned addr_hash(const char *s) {
  unsigned h = 2166136261u;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
  return h % ADDR_BUCKETS;
}

static addr_count_t *addr_acquire(server_t *srv, const char *addr) {
  addr_count_t **slot = &srv->addr_table[addr_hash(addr)], *a = *slot;
  while (a && strcmp(a->addr, addr) != 0) a = a->next;
  if (!a) {
    if (!(a = calloc(1, sizeof *a))) return NULL;
    snprintf(a->addr, sizeof a->addr, "%s", addr);
    a->next = *slot;
    *slot = a;
  }
  if (a->count >= srv->max_per_addr) return NULL;
  a->count++;
  return a;
}

static void addr_release(server_t *srv, addr_count_t *a) {
  if (!a || --a->count > 0) return;
  for (addr_count_t **p = &srv->addr_table[addr_hash(a->addr)]; *p; p = &(*p)->next)
    if (*p == a) {
      *p = a->next;
      free(a);
      return;
    }
}

/* ---- the waiting and gated lists ---- */

static void list_push(conn_list_t *l, conn_t *c) {
  c->list = l;
  c->lprev = l->tail;
  c->lnext = NULL;
  if (l->tail)
    l->tail->lnext = c;
  else
    l->head = c;
  l->tail = c;
  l->n++;
}

static void list_remove(conn_t *c) {
  conn_list_t *l = c->list;
  if (!l) return;
  if (c->lprev)
    c->lprev->lnext = c->lnext;
  else
    l->head = c->lnext;
  if (c->lnext)
    c->lnext->lprev = c->lprev;
  else
    l->tail = c->lprev;
  c->lprev = c->lnext = NULL;
  c->list = NULL;
  l->n--;
}

/* What to watch: base, and hang-ups until one was seen (level-triggered
 * epoll would report it again and again). */
static uint32_t interest(conn_t *c, uint32_t base) { return base | (atomic_load(&c->hung_up) ? 0 : EPOLLRDHUP); }

/* ---- closing ---- */

static void conn_free(conn_t *c) {
  sbuf_free(&c->in), sbuf_free(&c->body), sbuf_free(&c->out);
  free(c->wake), free(c->gate_queue), free(c->baton), free(c->entries);
  free(c);
}

static void conn_close(conn_t *c) {
  server_t *srv = c->srv;
  if (c->fd < 0) return;
  stop_waiting(c);
  watch(c, 0);
  if (c->worker_owned) { /* the worker still reads it: close when it hands it back */
    pthread_mutex_lock(&srv->stream_lock);
    c->dead = 1;
    pthread_cond_broadcast(&srv->stream_cond);
    pthread_mutex_unlock(&srv->stream_lock);
    return;
  }
  close(c->fd);
  c->fd = -1;
  addr_release(srv, c->addr);
  if (c->state != CONN_HEAD || c->got_bytes) atomic_fetch_sub(&srv->busy, 1);
  if (c->prev)
    c->prev->next = c->next;
  else
    srv->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  srv->nconns--;
  c->next = srv->graveyard; /* freed after this batch of events, which may still name it */
  srv->graveyard = c;
}

/* ---- writing ---- */

/* 1: everything written; 0: the socket is full; -1: the connection failed. */
static int flush_out(conn_t *c) {
  while (c->out_off < c->out.len) {
    ssize_t n = send(c->fd, c->out.data + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL);
    if (n > 0) {
      c->out_off += (size_t)n;
      c->deadline = server_now() + WRITE_TIMEOUT;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return 0;
    } else {
      return -1;
    }
  }
  return 1;
}

static void begin_linger(conn_t *c) {
  shutdown(c->fd, SHUT_WR);
  c->state = CONN_LINGER;
  c->deadline = server_now() + LINGER_TIME;
  watch(c, interest(c, EPOLLIN));
}

static void reset_request(conn_t *c) {
  sbuf_free(&c->out);
  sbuf_free(&c->body);
  free(c->wake), free(c->gate_queue), free(c->baton);
  c->wake = c->gate_queue = c->baton = NULL;
  c->out_off = 0;
  c->gate_seq = 0;
  c->streaming = c->stream_end = 0;
  c->resumed = NULL;
  c->suspend_seconds = 0;
  c->baton_event = c->declined_event = 0;
}

/* The request is answered: the next one (perhaps already read) or close. */
static void next_request(conn_t *c) {
  server_t *srv = c->srv;
  if (c->close_after || !c->keep_alive || atomic_load(&c->hung_up) || atomic_load(&srv->stopping)) {
    begin_linger(c);
    return;
  }
  reset_request(c);
  size_t rest = c->in.len - c->req_end;
  if (rest > 0) memmove(c->in.data, c->in.data + c->req_end, rest);
  c->in.len = rest;
  c->req_end = c->body_off = 0;
  if (rest == 0 && c->in.cap > 4 * READ_CHUNK) sbuf_free(&c->in); /* idle connections hold little */
  c->state = CONN_HEAD;
  c->got_bytes = rest > 0;
  if (!c->got_bytes) atomic_fetch_sub(&srv->busy, 1);
  c->deadline = server_now() + (rest ? srv->head_timeout : srv->idle_timeout);
  watch(c, interest(c, EPOLLIN));
  if (rest) process_input(c);
}

/* A streamed answer: write what the worker gave; it waits for room. */
static void write_stream(conn_t *c) {
  server_t *srv = c->srv;
  pthread_mutex_lock(&srv->stream_lock);
  int r = flush_out(c);
  int end = c->stream_end && r == 1;
  if (r == 1) {
    c->out.len = c->out_off = 0;
    pthread_cond_broadcast(&srv->stream_cond);
  }
  pthread_mutex_unlock(&srv->stream_lock);
  if (r < 0)
    conn_close(c);
  else if (!end)
    watch(c, interest(c, r == 0 ? EPOLLOUT : 0));
  else if (!c->worker_owned) /* else its hand-back finishes it */
    next_request(c);
}

static void on_writable(conn_t *c) {
  if (c->state == CONN_STREAM) {
    write_stream(c);
    return;
  }
  int r = flush_out(c);
  if (r < 0)
    conn_close(c);
  else if (r == 0)
    watch(c, interest(c, EPOLLOUT));
  else
    next_request(c);
}

static void start_write(conn_t *c) {
  c->state = CONN_WRITING;
  c->deadline = server_now() + WRITE_TIMEOUT;
  on_writable(c);
}

/* An answer made here (protocol errors, limits, timeouts), then close. */
static void refuse(conn_t *c, int status, const char *code, const char *message) {
  server_t *srv = c->srv;
  char rid[17];
  server_request_id(srv, rid);
  sbuf_free(&c->out);
  c->out_off = 0;
  server_error_response(srv, &c->out, status, code, message, rid, 1);
  server_log(srv, status == 500 ? "error" : "warn", "request refused", status, c->remote, rid, message);
  c->close_after = 1;
  if (c->state == CONN_HEAD && !c->got_bytes) atomic_fetch_add(&srv->busy, 1);
  c->got_bytes = 1;
  start_write(c);
}

/* ---- reading ---- */

static int append_body(void *arg, const char *p, size_t n) {
  conn_t *c = arg;
  if (c->body.len + n > c->srv->max_body) return 0;
  return sbuf_add(&c->body, p, n) == 0;
}

static void body_ready(conn_t *c) {
  server_t *srv = c->srv;
  c->state = CONN_WORKING;
  c->deadline = 0;
  watch(c, interest(c, 0));
  atomic_fetch_add(&srv->requests, 1);
  server_dispatch(srv, c);
}

/* The body so far: complete, still coming, or refused. */
static void read_body(conn_t *c) {
  if (!c->chunked) {
    if (c->in.len - c->body_off >= (size_t)c->content_length) {
      c->req_end = c->body_off + (size_t)c->content_length;
      body_ready(c);
    }
    return;
  }
  size_t used = 0;
  int r = http_chunked_decode(&c->chunk, c->in.data + c->body_off, c->in.len - c->body_off, &used, append_body, c);
  /* the decoded bytes are in body: drop their framing from the input */
  memmove(c->in.data + c->body_off, c->in.data + c->body_off + used, c->in.len - c->body_off - used);
  c->in.len -= used;
  if (r == 1) {
    c->req_end = c->body_off;
    body_ready(c);
  } else if (r == -1) {
    refuse(c, 400, "bad_request", "malformed chunked request body");
  } else if (r == -2) {
    refuse(c, 413, "payload_too_large", "request body too large");
  }
}

static void head_ready(conn_t *c, http_head_t *h) {
  server_t *srv = c->srv;
  c->keep_alive = h->keep_alive;
  c->minor = h->minor;
  c->is_head = h->method_len == 4 && memcmp(h->method, "HEAD", 4) == 0;
  c->chunked = h->chunked;
  c->content_length = h->content_length < 0 ? 0 : h->content_length;
  c->body_off = h->head_len;
  memset(&c->chunk, 0, sizeof c->chunk);
  if (!c->chunked && (uint64_t)c->content_length > srv->max_body) {
    refuse(c, 413, "payload_too_large", "request body too large");
    return;
  }
  c->state = CONN_BODY;
  c->deadline = server_now() + BODY_TIMEOUT + (double)c->content_length / 262144.0;
  if (h->expect_continue && (c->chunked || c->content_length > 0) && c->in.len == c->body_off) {
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    if (send(c->fd, cont, sizeof cont - 1, MSG_NOSIGNAL) < 0) { /* tiny: the socket has room */
    }
  }
  read_body(c);
}

static const char *refusal_code(int status) {
  switch (status) {
    case 414: return "uri_too_long";
    case 417: return "expectation_failed";
    case 431: return "headers_too_large";
    case 501: return "not_implemented";
    case 505: return "http_version_not_supported";
    default: return "bad_request";
  }
}

static void process_input(conn_t *c) {
  if (c->state == CONN_BODY) {
    read_body(c);
    return;
  }
  if (c->state != CONN_HEAD) return;
  http_head_t h;
  int r = http_parse_head(c->in.data, c->in.len, &h);
  if (r < 0)
    refuse(c, h.status, refusal_code(h.status), h.error);
  else if (r > 0)
    head_ready(c, &h);
}

/* Reads what the socket has (bounded): 1 if it got bytes, 0 if none;
 * end of input sets hung_up; -1 on error. */
static int read_some(conn_t *c) {
  server_t *srv = c->srv;
  size_t limit = HTTP_MAX_HEAD + srv->max_body + 4096;
  int got = 0;
  while (c->in.len < limit) {
    size_t want = limit - c->in.len < READ_CHUNK ? limit - c->in.len : READ_CHUNK;
    if (sbuf_reserve(&c->in, want) < 0) return -1;
    ssize_t n = recv(c->fd, c->in.data + c->in.len, want, 0);
    if (n > 0) {
      c->in.len += (size_t)n;
      got = 1;
      if ((size_t)n < want) break;
    } else if (n == 0) {
      atomic_store(&c->hung_up, 1);
      break;
    } else if (errno == EINTR) {
      continue;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      break;
    } else {
      return -1;
    }
  }
  return got;
}

static void drain_linger(conn_t *c) {
  char sink[4096];
  ssize_t n;
  while ((n = recv(c->fd, sink, sizeof sink, 0)) > 0) {
  }
  if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) conn_close(c);
}

static void on_readable(conn_t *c, uint32_t ev) {
  server_t *srv = c->srv;
  int r = read_some(c);
  if (r > 0 && c->state == CONN_HEAD && !c->got_bytes) {
    c->got_bytes = 1; /* a request begins: it has head_timeout to arrive whole */
    atomic_fetch_add(&srv->busy, 1);
    c->deadline = server_now() + srv->head_timeout;
  }
  if (r > 0) process_input(c);
  if (c->fd < 0 || (c->state != CONN_HEAD && c->state != CONN_BODY)) return;
  /* still reading a request, but no more can come */
  if (r < 0 || atomic_load(&c->hung_up) || (ev & (EPOLLHUP | EPOLLERR))) conn_close(c);
}

/* ---- accepting ---- */

static void turn_away(server_t *srv, int fd, const char *remote, int status, const char *code, const char *message) {
  sbuf_t out = {0};
  char rid[17];
  server_request_id(srv, rid);
  server_error_response(srv, &out, status, code, message, rid, 1);
  server_log(srv, "warn", "connection refused", status, remote, rid, message);
  if (out.len && send(fd, out.data, out.len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) { /* best effort */
  }
  sbuf_free(&out);
  shutdown(fd, SHUT_WR);
  close(fd);
}

static void pause_listener(server_t *srv) {
  struct epoll_event ev = {0};
  epoll_ctl(srv->epoll_fd, EPOLL_CTL_DEL, srv->listen_fd, &ev);
  srv->listener_paused = 1;
}

static void peer_address(const struct sockaddr_storage *sa, char *addr, size_t len) {
  addr[0] = 0;
  if (sa->ss_family == AF_INET)
    inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, addr, (socklen_t)len);
  else if (sa->ss_family == AF_INET6)
    inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, addr, (socklen_t)len);
}

static void accept_all(server_t *srv) {
  for (;;) {
    struct sockaddr_storage sa;
    socklen_t salen = sizeof sa;
    int fd = accept4(srv->listen_fd, (struct sockaddr *)&sa, &salen, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        pause_listener(srv); /* out of descriptors: wait a tick instead of spinning */
        server_log(srv, "error", "cannot accept connections", 503, "", "", strerror(errno));
      }
      return;
    }
    char addr[48];
    peer_address(&sa, addr, sizeof addr);
    if (srv->nconns >= srv->max_conns) {
      turn_away(srv, fd, addr, 503, "too_many_connections",
                "the node holds as many connections as it can; retry shortly");
      continue;
    }
    addr_count_t *a = addr_acquire(srv, addr);
    conn_t *c = a ? calloc(1, sizeof *c) : NULL;
    if (!c) {
      if (a) addr_release(srv, a);
      turn_away(srv, fd, addr, 429, "too_many_connections_from_address",
                "too many open connections from your address; close some or reuse them (keep-alive)");
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->srv = srv;
    c->fd = fd;
    c->addr = a;
    snprintf(c->remote, sizeof c->remote, "%s", addr);
    c->state = CONN_HEAD;
    c->deadline = server_now() + srv->head_timeout;
    c->next = srv->conns;
    if (srv->conns) srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    watch(c, interest(c, EPOLLIN));
  }
}

/* ---- long polls ----
 * A waiting request is on srv->waiters (oldest first) and, once per key it
 * waits on, in that key's bucket (oldest first), so that waking the waiters
 * of a key costs what they are, not what all waiters are. */

struct wake_entry {
  conn_t *c;
  wake_bucket_t *bucket;
  wake_entry_t *prev, *next;
};

struct wake_bucket {
  wake_bucket_t *chain;
  wake_entry_t *head, *tail;
  char key[];
};

static unsigned key_hash(const char *s) { return addr_hash(s) % WAKE_BUCKETS; }

static wake_bucket_t *bucket_find(server_t *srv, const char *key, int create) {
  wake_bucket_t **slot = &srv->wake_table[key_hash(key)], *b = *slot;
  while (b && strcmp(b->key, key) != 0) b = b->chain;
  if (!b && create && (b = calloc(1, sizeof *b + strlen(key) + 1))) {
    strcpy(b->key, key);
    b->chain = *slot;
    *slot = b;
  }
  return b;
}

static void bucket_drop(server_t *srv, wake_bucket_t *b) {
  for (wake_bucket_t **p = &srv->wake_table[key_hash(b->key)]; *p; p = &(*p)->chain)
    if (*p == b) {
      *p = b->chain;
      free(b);
      return;
    }
}

/* Takes a waiter out of its keys' buckets. */
static void unindex(conn_t *c) {
  for (int i = 0; i < c->nentries; i++) {
    wake_entry_t *e = &c->entries[i];
    wake_bucket_t *b = e->bucket;
    if (!b) continue;
    if (e->prev)
      e->prev->next = e->next;
    else
      b->head = e->next;
    if (e->next)
      e->next->prev = e->prev;
    else
      b->tail = e->prev;
    if (!b->head) bucket_drop(c->srv, b);
  }
  free(c->entries);
  c->entries = NULL;
  c->nentries = 0;
}

static int index_keys(conn_t *c) {
  int n = 0;
  for (const char *k = c->wake; k && *k; k += strlen(k) + 1) n++;
  if (n == 0) return 0;
  if (!(c->entries = calloc((size_t)n, sizeof *c->entries))) return -1;
  c->nentries = n;
  int i = 0;
  for (const char *k = c->wake; *k; k += strlen(k) + 1, i++) {
    wake_bucket_t *b = bucket_find(c->srv, k, 1);
    if (!b) return -1;
    wake_entry_t *e = &c->entries[i];
    e->c = c;
    e->bucket = b;
    e->prev = b->tail;
    if (b->tail)
      b->tail->next = e;
    else
      b->head = e;
    b->tail = e;
  }
  return 0;
}

static void stop_waiting(conn_t *c) {
  if (c->list == &c->srv->waiters) unindex(c);
  list_remove(c);
}

static void resume(conn_t *c, const char *why) {
  stop_waiting(c);
  c->resumed = why;
  c->state = CONN_WORKING;
  watch(c, interest(c, 0));
  server_dispatch(c->srv, c);
}

static void suspend(conn_t *c) {
  server_t *srv = c->srv;
  double now = server_now();
  if (!c->resumed) c->waiting_since = now;
  c->resume_at = now + c->suspend_seconds;
  c->suspend_seconds = 0;
  if (atomic_load(&c->hung_up)) { /* a poller that hung up must not be handed work */
    c->state = CONN_WAITING;
    conn_close(c);
    return;
  }
  if (atomic_load(&srv->stopping)) {
    if (c->resumed && strcmp(c->resumed, "shutdown") == 0) { /* asked to wait through the shutdown */
      sbuf_free(&c->out);
      refuse(c, 503, "shutting_down", "the node is shutting down");
      return;
    }
    resume(c, "shutdown");
    return;
  }
  c->state = CONN_WAITING;
  c->wait_seq = ++srv->next_wait_seq;
  list_push(&srv->waiters, c);
  if (index_keys(c) < 0) { /* out of memory: it waits for its time only */
    unindex(c);
    server_log(srv, "error", "cannot index a waiting request", 0, c->remote, "", "out of memory");
  }
  watch(c, interest(c, 0));
}

/* The oldest waiter in b that did not already pass on this event. */
static conn_t *first_undeclined(wake_bucket_t *b, uint64_t event) {
  for (wake_entry_t *e = b ? b->head : NULL; e; e = e->next)
    if (e->c->declined_event != event) return e->c;
  return NULL;
}

/* "ns:*" -> the oldest waiter with any key in ns (a rare, full scan). */
static conn_t *first_in_namespace(server_t *srv, const char *key, uint64_t event) {
  size_t ns = (size_t)(strrchr(key, ':') - key) + 1;
  for (conn_t *c = srv->waiters.head; c; c = c->lnext) {
    if (c->declined_event == event) continue;
    for (const char *k = c->wake; k && *k; k += strlen(k) + 1)
      if (strncmp(k, key, ns) == 0) return c;
  }
  return NULL;
}

/* For notify-one on "ns:value": the oldest waiter on it or on "ns:*". */
static conn_t *pick_one(server_t *srv, const char *key, uint64_t event) {
  const char *colon = strrchr(key, ':');
  if (!colon) return first_undeclined(bucket_find(srv, key, 0), event);
  if (strcmp(colon + 1, "*") == 0) return first_in_namespace(srv, key, event);
  char any[256];
  conn_t *exact = first_undeclined(bucket_find(srv, key, 0), event), *wild = NULL;
  if ((size_t)(colon - key) + 3 <= sizeof any) {
    snprintf(any, sizeof any, "%.*s:*", (int)(colon - key), key);
    wild = first_undeclined(bucket_find(srv, any, 0), event);
  }
  if (!exact) return wild;
  return wild && wild->wait_seq < exact->wait_seq ? wild : exact;
}

/* Wakes every waiter on key (NULL: every waiter), or only the one waiting
 * longest that has not already passed on this event (hops: how many more
 * times it may be passed on). */
static void notify(server_t *srv, const char *key, int one, uint64_t event, int hops) {
  if (!key) {
    while (srv->waiters.head) resume(srv->waiters.head, "woken");
    return;
  }
  if (!one) {
    wake_bucket_t *b;
    while ((b = bucket_find(srv, key, 0)) && b->head) resume(b->head->c, "woken");
    return;
  }
  conn_t *c = pick_one(srv, key, event);
  char *baton = c ? strdup(key) : NULL;
  if (!baton) return;
  free(c->baton);
  c->baton = baton;
  c->baton_event = event;
  c->baton_hops = hops;
  resume(c, "woken");
}

/* ---- connections handed back by workers ---- */

static void handed_back(conn_t *c) {
  server_t *srv = c->srv;
  if (c->dead) {
    conn_close(c);
    return;
  }
  if (c->suspend_seconds > 0) {
    /* woken for one job it did not take: the next waiter gets the chance */
    char *baton = c->baton;
    uint64_t event = c->baton_event;
    int hops = c->baton_hops;
    c->baton = NULL;
    c->declined_event = event;
    suspend(c);
    if (baton && hops > 0) notify(srv, baton, 1, event, hops - 1);
    free(baton);
    return;
  }
  free(c->baton);
  c->baton = NULL;
  if (c->streaming) {
    c->state = CONN_STREAM;
    write_stream(c);
  } else if (c->gate_queue && aitbc_queue_committed(c->gate_queue) < c->gate_seq) {
    c->state = CONN_GATED; /* its audit row is not committed yet */
    list_push(&srv->gated, c);
    watch(c, interest(c, 0));
  } else {
    start_write(c);
  }
}

static void take_completions(server_t *srv) {
  pthread_mutex_lock(&srv->cq_lock);
  conn_t *list = srv->cq_head;
  srv->cq_head = srv->cq_tail = NULL;
  pthread_mutex_unlock(&srv->cq_lock);
  for (conn_t *c = list, *next; c; c = next) {
    pthread_mutex_lock(&srv->cq_lock);
    next = c->qnext;
    c->in_completions = 0;
    int done = c->done, kicked = c->kicked;
    c->done = c->kicked = 0;
    if (done) c->worker_owned = 0;
    pthread_mutex_unlock(&srv->cq_lock);
    if (done) {
      handed_back(c);
    } else if (kicked && c->fd >= 0 && !c->dead) {
      c->state = CONN_STREAM;
      write_stream(c);
    }
  }
}

/* Called by workers: the connection is theirs no more (or, kick_only, its
 * stream has more to write). */
void server_complete(server_t *srv, conn_t *c, int kick_only) {
  pthread_mutex_lock(&srv->cq_lock);
  if (kick_only)
    c->kicked = 1;
  else
    c->done = 1;
  int was_empty = !srv->cq_head;
  if (!c->in_completions) {
    c->in_completions = 1;
    c->qnext = NULL;
    if (srv->cq_tail)
      srv->cq_tail->qnext = c;
    else
      srv->cq_head = c;
    srv->cq_tail = c;
  }
  pthread_mutex_unlock(&srv->cq_lock);
  if (was_empty) server_io_wake(srv);
}

/* ---- events from other threads ---- */

void server_io_wake(server_t *srv) {
  uint64_t one = 1;
  if (write(srv->wake_fd, &one, sizeof one) < 0) { /* the counter is full: a wake-up is pending anyway */
  }
}

void server_listener(void *arg, int kind, const char *key, int one) {
  server_t *srv = arg;
  size_t len = key ? strlen(key) : 0;
  server_event_t *e = malloc(sizeof *e + len + 1);
  pthread_mutex_lock(&srv->ev_lock);
  if (e) {
    e->next = NULL, e->kind = kind, e->one = one, e->has_key = key != NULL;
    memcpy(e->key, key ? key : "", len + 1);
    if (srv->events_tail)
      srv->events_tail->next = e;
    else
      srv->events_head = e;
    srv->events_tail = e;
  } else {
    srv->events_lost = 1; /* then every waiter wakes and every gate is checked */
  }
  pthread_mutex_unlock(&srv->ev_lock);
  server_io_wake(srv);
}

static void release_gates(server_t *srv) {
  for (conn_t *c = srv->gated.head, *next; c; c = next) {
    next = c->lnext;
    if (aitbc_queue_committed(c->gate_queue) >= c->gate_seq) {
      list_remove(c);
      start_write(c);
    }
  }
}

static void take_events(server_t *srv) {
  pthread_mutex_lock(&srv->ev_lock);
  server_event_t *list = srv->events_head;
  int lost = srv->events_lost;
  srv->events_head = srv->events_tail = NULL;
  srv->events_lost = 0;
  pthread_mutex_unlock(&srv->ev_lock);
  int commits = lost;
  if (lost) notify(srv, NULL, 0, 0, 0);
  for (server_event_t *e = list, *next; e; e = next) {
    next = e->next;
    if (e->kind == AITBC_EVENT_COMMIT)
      commits = 1;
    else
      notify(srv, e->has_key ? e->key : NULL, e->one, ++srv->next_event, MAX_BATON_HOPS);
    free(e);
  }
  if (commits && srv->gated.n) release_gates(srv);
}

/* ---- timeouts and stopping ---- */

/* Gauges for /metrics (sys.counters): connections held, long polls waiting. */
static void publish_gauges(server_t *srv) {
  char key[64];
  snprintf(key, sizeof key, "gauge|http_connections|%d", srv->port);
  aitbc_counter_update(key, srv->nconns, 1);
  snprintf(key, sizeof key, "gauge|http_waiting|%d", srv->port);
  aitbc_counter_update(key, srv->waiters.n, 1);
}

static void sweep(server_t *srv, double now) {
  publish_gauges(srv);
  for (conn_t *c = srv->waiters.head, *next; c; c = next) {
    next = c->lnext;
    if (c->resume_at <= now) resume(c, "timeout");
  }
  for (conn_t *c = srv->conns, *next; c; c = next) {
    next = c->next;
    if (!c->deadline || c->deadline > now || c->worker_owned) continue;
    if (c->state == CONN_HEAD && !c->got_bytes)
      conn_close(c); /* idle */
    else if (c->state == CONN_HEAD || c->state == CONN_BODY)
      refuse(c, 408, "request_timeout", "the request did not arrive in time");
    else if (c->state == CONN_WRITING || c->state == CONN_LINGER || c->state == CONN_STREAM)
      conn_close(c); /* the client does not read */
  }
}

static void begin_stop(server_t *srv) {
  if (srv->listen_fd >= 0) {
    pause_listener(srv);
    close(srv->listen_fd);
    srv->listen_fd = -1;
  }
  while (srv->waiters.head) resume(srv->waiters.head, "shutdown"); /* long polls answer now */
  for (conn_t *c = srv->conns, *next; c; c = next) {
    next = c->next;
    if (c->state == CONN_HEAD && !c->got_bytes) conn_close(c);
  }
}

static void on_event(conn_t *c, uint32_t e) {
  if (c->fd < 0) return;
  switch (c->state) {
    case CONN_HEAD:
    case CONN_BODY: on_readable(c, e); break;
    case CONN_LINGER: drain_linger(c); break;
    case CONN_WRITING:
    case CONN_STREAM:
      if (e & (EPOLLERR | EPOLLHUP)) {
        conn_close(c);
        break;
      }
      if (e & EPOLLRDHUP) { /* it may still read the answer */
        atomic_store(&c->hung_up, 1);
        watch(c, c->events & ~(uint32_t)EPOLLRDHUP);
      }
      if (e & EPOLLOUT) on_writable(c);
      break;
    case CONN_WAITING:
    case CONN_GATED: conn_close(c); break; /* the client is gone */
    case CONN_WORKING:                     /* its handler may ask request.connected() */
      atomic_store(&c->hung_up, 1);
      watch(c, 0);
      break;
  }
}

static void *io_main(void *arg) {
  server_t *srv = arg;
  struct epoll_event evs[256];
  double next_sweep = server_now() + 0.05;
  int stopping = 0;
  while (!atomic_load(&srv->io_stop)) {
    int n = epoll_wait(srv->epoll_fd, evs, 256, 50);
    for (int i = 0; i < n; i++) {
      if (evs[i].data.ptr == &LISTEN_TAG) {
        if (!stopping) accept_all(srv);
      } else if (evs[i].data.ptr == &WAKE_TAG) {
        uint64_t v;
        if (read(srv->wake_fd, &v, sizeof v) < 0) { /* nothing pending */
        }
        take_completions(srv);
        take_events(srv);
      } else {
        on_event(evs[i].data.ptr, evs[i].events);
      }
    }
    while (srv->graveyard) {
      conn_t *c = srv->graveyard;
      srv->graveyard = c->next;
      conn_free(c);
    }
    if (!stopping && atomic_load(&srv->stopping)) {
      stopping = 1;
      begin_stop(srv);
    }
    double now = server_now();
    if (now >= next_sweep) {
      sweep(srv, now);
      next_sweep = now + 0.05;
      if (srv->listener_paused && srv->listen_fd >= 0) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &LISTEN_TAG};
        epoll_ctl(srv->epoll_fd, EPOLL_CTL_ADD, srv->listen_fd, &ev);
        srv->listener_paused = 0;
      }
    }
  }
  return NULL;
}

/* ---- start and stop ---- */

int server_io_start(server_t *srv, const char *host, int port, int inherited_fd, char *err, size_t errlen) {
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  if (inherited_fd < 0 && inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
    snprintf(err, errlen, "invalid listen address '%s' (expected an IPv4 address such as 127.0.0.1)", host);
    return -1;
  }
  srv->addr_table = calloc(ADDR_BUCKETS, sizeof *srv->addr_table);
  srv->wake_table = calloc(WAKE_BUCKETS, sizeof *srv->wake_table);
  srv->listen_fd = inherited_fd >= 0 ? inherited_fd : socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  srv->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  srv->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (!srv->addr_table || !srv->wake_table || srv->listen_fd < 0 || srv->epoll_fd < 0 || srv->wake_fd < 0) {
    snprintf(err, errlen, "cannot set up the server: %s", strerror(errno));
    return -1;
  }
  if (inherited_fd >= 0) { /* a listening socket another process holds too (aitbc serve's supervisor) */
    int flags = fcntl(inherited_fd, F_GETFL);
    if (flags < 0 || fcntl(inherited_fd, F_SETFL, flags | O_NONBLOCK) < 0 ||
        fcntl(inherited_fd, F_SETFD, FD_CLOEXEC) < 0) {
      snprintf(err, errlen, "cannot use the listening socket fd %d (%s)", inherited_fd, strerror(errno));
      return -1;
    }
  } else {
    int one = 1;
    setsockopt(srv->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(srv->listen_fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(srv->listen_fd, 4096) < 0) {
      snprintf(err, errlen, "cannot listen on %s:%d (%s)", host, port, strerror(errno));
      return -1;
    }
  }
  socklen_t len = sizeof addr;
  getsockname(srv->listen_fd, (struct sockaddr *)&addr, &len);
  srv->port = ntohs(addr.sin_port);
  struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &LISTEN_TAG};
  struct epoll_event wev = {.events = EPOLLIN, .data.ptr = &WAKE_TAG};
  epoll_ctl(srv->epoll_fd, EPOLL_CTL_ADD, srv->listen_fd, &lev);
  epoll_ctl(srv->epoll_fd, EPOLL_CTL_ADD, srv->wake_fd, &wev);
  if (pthread_create(&srv->io_thread, NULL, io_main, srv) != 0) {
    snprintf(err, errlen, "cannot start the server's thread");
    return -1;
  }
  srv->io_started = 1;
  return 0;
}

void server_io_join(server_t *srv) {
  if (srv->io_started) {
    atomic_store(&srv->io_stop, 1);
    server_io_wake(srv);
    pthread_join(srv->io_thread, NULL);
    srv->io_started = 0;
  }
  take_completions(srv); /* the workers are gone: nothing is theirs any more */
  while (srv->conns) {
    conn_t *c = srv->conns;
    c->worker_owned = 0;
    conn_close(c);
  }
  while (srv->graveyard) {
    conn_t *c = srv->graveyard;
    srv->graveyard = c->next;
    conn_free(c);
  }
  for (server_event_t *e = srv->events_head, *next; e; e = next) next = e->next, free(e);
  srv->events_head = srv->events_tail = NULL;
  if (srv->addr_table) {
    for (int i = 0; i < ADDR_BUCKETS; i++)
      for (addr_count_t *a = srv->addr_table[i], *next; a; a = next) next = a->next, free(a);
    free(srv->addr_table);
    srv->addr_table = NULL;
  }
  free(srv->wake_table); /* empty: every waiter left its buckets when it closed */
  srv->wake_table = NULL;
  if (srv->listen_fd >= 0) close(srv->listen_fd);
  if (srv->epoll_fd >= 0) close(srv->epoll_fd);
  if (srv->wake_fd >= 0) close(srv->wake_fd);
  srv->listen_fd = srv->epoll_fd = srv->wake_fd = -1;
}
