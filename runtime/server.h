/* Private to the HTTP server: server.c (Lua API, worker threads, requests
 * and responses in Lua) and server_io.c (the event loop: connections,
 * parsing, writing, timeouts, waiting requests). */
#ifndef AITBC_SERVER_H
#define AITBC_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "aitbc.h"
#include "http_parse.h"

typedef struct {
  char *data;
  size_t len, cap;
} sbuf_t;

int sbuf_reserve(sbuf_t *b, size_t extra); /* 0, or -1 out of memory */
int sbuf_add(sbuf_t *b, const void *p, size_t n);
int sbuf_addf(sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sbuf_free(sbuf_t *b);

enum conn_state {
  CONN_HEAD,    /* reading a request head (or idle between requests) */
  CONN_BODY,    /* reading its body */
  CONN_WORKING, /* a worker runs its handler */
  CONN_WAITING, /* a long poll: suspended until notified or its time is up */
  CONN_GATED,   /* answered, but held until a queue commit (audit rows) */
  CONN_WRITING, /* the answer is being written */
  CONN_STREAM,  /* a worker streams the body, the loop writes what it gives */
  CONN_LINGER,  /* answered with close: draining input before closing */
};

typedef struct server server_t;
typedef struct addr_count addr_count_t;
typedef struct conn conn_t;

typedef struct wake_entry wake_entry_t;
typedef struct wake_bucket wake_bucket_t;

typedef struct conn_list {
  conn_t *head, *tail;
  int n;
} conn_list_t;

struct conn {
  server_t *srv;
  int fd;
  enum conn_state state;
  char remote[48];
  addr_count_t *addr;
  uint32_t events; /* what epoll watches now (0: not registered) */
  double deadline; /* monotonic seconds; 0: none */

  /* input: the current request starts at in.data (consumed ones are dropped) */
  sbuf_t in;
  size_t body_off, req_end;
  int64_t content_length;
  int chunked, keep_alive, is_head, got_bytes, minor;
  http_chunked_t chunk;
  sbuf_t body; /* a chunked body, decoded */

  /* shared with the worker that owns it (handed over through queues) */
  int worker_owned;
  atomic_int hung_up; /* the peer closed its side (read by request.connected) */
  sbuf_t out;
  size_t out_off;
  int close_after;
  double suspend_seconds; /* > 0: the handler asked to wait */
  char *wake;             /* wake-up keys, each NUL-terminated, then an empty one */
  char *gate_queue;
  uint64_t gate_seq;

  /* waiting (long polls) and gated answers: on one of the loop's lists */
  struct conn_list *list;
  struct conn *lprev, *lnext;
  double waiting_since, resume_at;
  const char *resumed;   /* "woken", "timeout", "shutdown" */
  uint64_t wait_seq;     /* order among waiters */
  wake_entry_t *entries; /* one per wake key, in its bucket */
  int nentries;
  char *baton; /* the key of the notify-one that woke it */
  uint64_t baton_event, declined_event;
  int baton_hops;

  /* streaming: the worker appends to out under srv->stream_lock */
  int streaming, stream_end, dead;

  int in_completions; /* queued for the loop (under srv->cq_lock) */
  int kicked;         /* stream data to write */
  int done;           /* the worker handed it back */
  struct conn *qnext; /* work queue or completion queue */
  struct conn *prev, *next;
};

struct server {
  /* configuration */
  char *handler, *config, *path, *cpath, *log_queue;
  size_t max_body;
  int workers, max_conns, max_per_addr;
  double idle_timeout, head_timeout;
  int port;
  uint32_t id_prefix;
  atomic_uint id_counter;

  /* the loop */
  int listen_fd, epoll_fd, wake_fd;
  pthread_t io_thread;
  int io_started, listener_paused;
  atomic_int stopping, io_stop;
  conn_t *conns, *graveyard;
  conn_list_t waiters, gated;
  int nconns;
  addr_count_t **addr_table;
  wake_bucket_t **wake_table;
  uint64_t next_event, next_wait_seq;

  /* events from other threads: notifications and commits */
  pthread_mutex_t ev_lock;
  struct server_event *events_head, *events_tail;
  int events_lost;

  /* workers */
  pthread_t *worker_threads;
  int workers_started;
  pthread_mutex_t work_lock;
  pthread_cond_t work_cond;
  conn_t *work_head, *work_tail;
  int work_stop;
  lua_State *first_state; /* made at start to check the handler loads */

  /* completions: connections handed back by workers */
  pthread_mutex_t cq_lock;
  conn_t *cq_head, *cq_tail;

  pthread_mutex_t stream_lock;
  pthread_cond_t stream_cond;

  /* log lines: rate-limited */
  double log_window;
  int log_count, log_suppressed;

  atomic_long requests, states, busy;
};

/* server_io.c */
/* inherited_fd >= 0: serve on that listening socket instead of opening one */
int server_io_start(server_t *srv, const char *host, int port, int inherited_fd, char *err, size_t errlen);
void server_io_wake(server_t *srv);
void server_io_join(server_t *srv); /* after the workers: frees every connection */
void server_complete(server_t *srv, conn_t *c, int kick_only);
void server_listener(void *arg, int kind, const char *key, int one);

/* server.c */
void server_dispatch(server_t *srv, conn_t *c); /* to a worker */
void server_log(server_t *srv, const char *level, const char *msg, int status, const char *remote,
                const char *request_id, const char *detail);
void server_error_response(server_t *srv, sbuf_t *out, int status, const char *code, const char *message,
                           const char *request_id, int close);
void server_request_id(server_t *srv, char out[17]);
double server_now(void);

#endif
