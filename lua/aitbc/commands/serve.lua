--- aitbc serve: run the AITBC node (coordinator API, storage, keys).
return {
  name = "serve",
  category = "Node",
  summary = "Run the AITBC node: jobs, miners, API keys and their storage, over HTTP",
  description = "Serves /v1 (and /api/v1) on --listen until SIGTERM or Ctrl-C, then finishes the requests in "
    .. "flight. The first start creates an admin API key in the data directory (admin.key, mode 0600).",
  options = {
    { "--listen", metavar = "HOST:PORT", default = "127.0.0.1:8000", help = "address to listen on (port 0: any free port)" },
    { "--data-dir", metavar = "DIR", help = "database, keys and logs (default ~/.aitbc/node)" },
    { "--log-level", choices = { "debug", "info", "warn", "error" }, default = "info", help = "node.log verbosity" },
    { "--heartbeat-timeout", type = "number", min = 1, max = 3600, default = 30, metavar = "SECONDS",
      help = "a miner silent this long goes offline and its jobs are re-queued" },
    { "--max-body", type = "integer", min = 1024, max = 64 << 20, default = 1 << 20, metavar = "BYTES",
      help = "largest request body accepted (413 beyond)" },
    { "--handler-slots", type = "integer", min = 1, max = 1024, metavar = "N",
      help = "requests handled at once (default 3 per CPU core; waiting long-polls do not count)" },
    { "--grace", type = "number", min = 0, max = 600, default = 10, metavar = "SECONDS",
      help = "how long shutdown waits for requests in flight" },
    { "--detach", type = "boolean", help = "run in the background (writes a pid file) and return once it answers" },
    { "--pid-file", metavar = "FILE", help = "write the process id here (default with --detach: DATA_DIR/node.pid)" },
    { "--url-file", metavar = "FILE", help = "write the node's URL here once it listens" },
  },
  examples = { "aitbc serve", "aitbc serve --listen 0.0.0.0:8000 --data-dir /var/lib/aitbc",
               "aitbc serve --detach --data-dir /tmp/node" },
  run = function(ctx) return require("aitbc.node.serve").run(ctx) end,
}
