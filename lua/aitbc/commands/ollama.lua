--- aitbc ollama: the Ollama a miner uses, and the simulated one.
local errors = require "aitbc.errors"

local function url_of(ctx) return require("aitbc.ollama").normalize(ctx.opts.ollama_url or ctx.settings.ollama_url) end

return {
  name = "ollama",
  category = "Mining",
  summary = "Inspect the local Ollama, or run the simulated one (tests, devnet)",
  commands = {
    {
      name = "models",
      summary = "Models installed in Ollama (at --ollama-url, else the ollama_url setting)",
      list = "models", id_field = "name", fields = { "name", "size_gb", "family", "parameters" },
      options = { { "--ollama-url", metavar = "URL",
        help = "Ollama's URL (default: the ollama_url setting: OLLAMA_HOST, config file, http://127.0.0.1:11434)" } },
      run = function(ctx)
        local client = require("aitbc.ollama").new(url_of(ctx))
        local version, simulated = client:version()
        if not version then error(simulated, 0) end
        local models = assert(client:models())
        local rows = require("aitbc.json").array()
        for _, m in ipairs(models) do
          rows[#rows + 1] = { name = m.name, size_gb = string.format("%.1f", (m.size or 0) / 1e9),
            family = m.details and m.details.family, parameters = m.details and m.details.parameter_size }
        end
        return { url = client.url, version = version, simulated = simulated, models = rows }, function(d, out)
          out:print(string.format("Ollama %s at %s%s", d.version, d.url, d.simulated and " (SIMULATED)" or ""))
          if #d.models == 0 then out:print("no models installed (ollama pull llama3)") return end
          out:print(out:format_table(d.models, { "name", { "size_gb", "size (GB)" }, "family", "parameters" }))
        end
      end,
    },
    {
      name = "serve-sim",
      summary = "Run the simulated Ollama server (same API; synthetic, deterministic answers)",
      description = "For tests and devnets where no real Ollama runs. It announces itself as simulated.",
      options = {
        { "--listen", metavar = "HOST:PORT", default = "127.0.0.1:11434", help = "address (port 0: any free port)" },
        { "--models", metavar = "LIST", default = "llama3,llava,mistral", help = "comma-separated model names" },
        { "--token-delay", type = "number", min = 0, max = 5, default = 0.005, metavar = "SECONDS",
          help = "pause between streamed tokens" },
        { "--detach", type = "boolean", help = "run in the background; prints the URL and pid" },
        { "--dir", metavar = "DIR", help = "with --detach: where the pid, URL and log files go (default AITBC_HOME/ollama-sim)" },
        { "--url-file", metavar = "FILE", help = "write the URL here once listening" },
      },
      examples = { "aitbc ollama serve-sim", "aitbc ollama serve-sim --listen 127.0.0.1:0 --detach" },
      run = function(ctx)
        local sys = require "aitbc.sys"
        local json = require "aitbc.json"
        local host, port = ctx.opts.listen:match("^([%d%.]+):(%d+)$")
        if not host then errors.raise("usage", "--listen must be IPv4:PORT, e.g. 127.0.0.1:11434") end
        if ctx.opts.detach then
          local dir = ctx.opts.dir or (require("aitbc.config").home() .. "/ollama-sim")
          assert(sys.mkdir(dir, tonumber("700", 8)))
          local started = require("aitbc.daemon").start {
            args = { "ollama", "serve-sim", "--listen", ctx.opts.listen, "--models", ctx.opts.models,
              "--token-delay", tostring(ctx.opts.token_delay), "--url-file", dir .. "/url" },
            ready_file = dir .. "/url", log = dir .. "/ollama-sim.log",
          }
          assert(sys.write_file(dir .. "/pid", started.pid .. "\n", tonumber("644", 8)))
          return { url = started.url, pid = started.pid, dir = dir, simulated = true }, function(d, out)
            out:success(string.format("simulated Ollama running at %s (pid %d); stop it with: kill %d", d.url, d.pid, d.pid))
          end
        end
        local models = {}
        for name in ctx.opts.models:gmatch("[^,%s]+") do models[#models + 1] = name end
        sys.on_interrupt("flag")
        local srv, err = require("aitbc.server").start { host = host, port = math.tointeger(tonumber(port)),
          handler = "aitbc.ollama.sim", config = json.encode { models = models, token_delay = ctx.opts.token_delay,
            state = require("aitbc.crypto").hex(require("aitbc.crypto").random(8)) } }
        if not srv then errors.raise("failure", err) end
        local url = string.format("http://%s:%d", host, srv:port())
        if ctx.opts.url_file then sys.write_file(ctx.opts.url_file, url .. "\n", tonumber("644", 8)) end
        io.stdout:write("SIMULATED Ollama (aitbc) listening on ", url, " — models: ", table.concat(models, ", "), "\n")
        io.stdout:flush()
        while not sys.interrupted() do sys.sleep(0.2) end
        srv:stop(2)
        ctx.exit_code = errors.signal_exit(sys.interrupted())
      end,
    },
  },
}
