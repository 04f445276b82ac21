--- aitbc serve: run the AITBC node (coordinator API, storage, keys).  The
-- node itself is aitbc.node.serve; here are its options, --detach and what
-- the command says.

--- The options given to this command, as arguments again (from its
-- declaration), except those in `skip`.
local function passed_on(ctx, opts, args, skip)
  for _, o in ipairs(ctx.command.options) do
    local v = opts[o.key]
    if v ~= nil and not skip[o.key] then
      if o.type == "boolean" then
        if v then args[#args + 1] = o.long end
      elseif type(v) == "table" then -- repeatable
        for _, item in ipairs(v) do args[#args + 1] = o.long args[#args + 1] = tostring(item) end
      else
        args[#args + 1] = o.long
        args[#args + 1] = tostring(v)
      end
    end
  end
  return args
end

--- Starts the node in a new session and returns once it answers.  Every
-- option given to this command is passed on.
local function detach(ctx, opts)
  local args = passed_on(ctx, opts, { "serve", "--url-file", opts.data_dir .. "/node.url", "--pid-file", opts.pid_file,
    "--data-dir", opts.data_dir }, { detach = true, url_file = true, pid_file = true, data_dir = true })
  local started = require("aitbc.daemon").start {
    args = args,
    ready_file = opts.data_dir .. "/node.url", log = opts.data_dir .. "/serve.out",
  }
  return { pid = started.pid, url = started.url, data_dir = opts.data_dir, pid_file = opts.pid_file,
    log = opts.data_dir .. "/node.log" }
end


local function render_detached(d, out)
  out:success(string.format("node running in the background (pid %d) at %s", d.pid, d.url))
  out:print("  data dir: " .. d.data_dir .. "\n  log:      " .. d.log .. "\n  stop it:  kill $(cat " .. d.pid_file .. ")")
end

local function run(ctx)
  local config = require "aitbc.config"
  local serve = require "aitbc.node.serve"
  local opts = ctx.opts
  opts.data_dir = config.expand(opts.data_dir or (config.home() .. "/node"))
  opts.host, opts.port = serve.parse_listen(opts.listen)
  for _, url in ipairs(opts.peer or {}) do
    local _, why = require("aitbc.node.peers").normalize(url)
    if why then require("aitbc.errors").raise("usage", "--peer " .. url .. ": " .. why) end
  end
  if opts.follow and opts.peer then
    require("aitbc.errors").raise("usage", "--peer and --follow exclude each other: a follower takes every chain from its leader")
  end
  serve.private_data_dir(opts.data_dir)
  opts.pid_file = opts.pid_file and config.expand(opts.pid_file) or (opts.detach and (opts.data_dir .. "/node.pid"))
  if opts.detach then return detach(ctx, opts), render_detached end
  opts.environment = ctx.settings.environment
  opts.settings = serve.node_settings(opts.data_dir)
  local say = function(level, text) ctx.out[level](ctx.out, text) end
  if opts.listen_fd then
    serve.run(opts, say) -- a process of the supervisor below
  else
    -- the supervisor: holds the socket, runs the node in a process that inherits it
    local child_args = passed_on(ctx, opts, { "--data-dir", opts.data_dir }, { detach = true, url_file = true,
      pid_file = true, data_dir = true, listen_fd = true, integrity_check = true })
    local failed = require("aitbc.node.supervisor").run(opts, child_args, say)
    if failed then
      ctx.exit_code = failed
      return
    end
  end
  -- stopped by a signal, gracefully: 130 for Ctrl-C, 143 for SIGTERM
  local signal = require("aitbc.sys").interrupted()
  if signal then ctx.exit_code = require("aitbc.errors").signal_exit(signal) end
end

return {
  name = "serve",
  category = "Node",
  summary = "Run the AITBC node: jobs, miners, API keys and their storage, over HTTP",
  description = "Serves /v1 (and /api/v1) on --listen until SIGTERM or Ctrl-C, then finishes the requests in "
    .. "flight and exits 130 (Ctrl-C) or 143 (SIGTERM). The first start creates an admin API key in the data "
    .. "directory (admin.key, mode 0600). A small supervisor holds the listening socket and runs the node in a "
    .. "process of its own, so that `aitbc admin restart` and `admin update` replace it without refusing a "
    .. "connection. DATA_DIR/node.json holds the node's configuration (release channel and key, thresholds, "
    .. "alert webhook).",
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
    { "--max-connections", type = "integer", min = 16, max = 1 << 20, default = 16384, metavar = "N",
      help = "open connections held at most (503 beyond; limited by the open-files limit)" },
    { "--max-per-address", type = "integer", min = 1, max = 1 << 20, default = 1024, metavar = "N",
      help = "open connections from one client address (429 beyond)" },
    { "--idle-timeout", type = "number", min = 0.1, max = 3600, default = 15, metavar = "SECONDS",
      help = "a kept-alive connection idle this long is closed" },
    { "--grace", type = "number", min = 0, max = 600, default = 10, metavar = "SECONDS",
      help = "how long shutdown waits for requests in flight" },
    { "--chains", metavar = "LIST", default = "ait-devnet", help = "chains this node keeps (comma-separated)" },
    { "--block-time", type = "number", min = 0.05, max = 3600, default = 2, metavar = "SECONDS",
      help = "a block every this often, sealing the accepted transactions" },
    { "--rental-hour", type = "number", min = 0.1, max = 3600, default = 3600, metavar = "SECONDS",
      help = "how long a rented GPU-hour lasts (a devnet or a test shortens it to watch hourly settlement)" },
    { "--param", metavar = "NAME=VALUE", repeatable = true,
      help = "a parameter of a new chain: voting_period (blocks), quorum, threshold, min_deposit (AITBC), "
        .. "miner_reward (AITBC); a chain that exists changes them only through governance" },
    { "--faucet", choices = { "auto", "on", "off" }, default = "auto",
      help = "the faucet (POST /v1/chain/{id}/faucet): auto = on for devnet chains only (names with 'devnet', "
        .. "like the default ait-devnet), on, or off" },
    { "--follow", metavar = "URL", help = "follow another node's chains: fetch, verify and apply every block (read-only)" },
    { "--authority", metavar = "KEY",
      help = "with --follow: the leader's node key (base64url) to trust (default: the key it announces)" },
    { "--peer", metavar = "URL", repeatable = true,
      help = "another node (repeatable): follow the chains it hosts (verified) and relay agent messages to it" },
    { "--detach", type = "boolean", help = "run in the background (writes a pid file) and return once it answers" },
    { "--pid-file", metavar = "FILE", help = "write the process id here (default with --detach: DATA_DIR/node.pid)" },
    { "--url-file", metavar = "FILE", help = "write the node's URL here once it listens" },
    -- set by the supervisor for the node process it starts
    { "--listen-fd", type = "integer", min = 0, metavar = "FD", hidden = true,
      help = "serve on this inherited listening socket (the supervisor's)" },
    { "--integrity-check", type = "boolean", hidden = true,
      help = "check the database and the chains' newest blocks before serving (emergency restarts)" },
  },
  examples = { "aitbc serve", "aitbc serve --listen 0.0.0.0:8000 --data-dir /var/lib/aitbc",
               "aitbc serve --detach --data-dir /tmp/node" },
  run = run,
}
