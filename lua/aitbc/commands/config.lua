--- aitbc config: show and change the CLI's settings.
local errors = require "aitbc.errors"

local function config_mod() return require "aitbc.config" end

local function shown(key, value, reveal)
  local spec = config_mod().keys[key]
  if spec and spec.secret and not reveal then return config_mod().mask(value) end
  return value
end

local function check_key(key)
  local config = config_mod()
  if config.keys[key] then return config.keys[key] end
  local near = require("aitbc.cli.suggest").nearest(key, config.key_names())
  errors.raise("usage", "unknown setting '" .. key .. "'",
    (near and ("did you mean '" .. near .. "'? ") or "") .. "known settings: " .. table.concat(config.key_names(), ", "),
    { code = "unknown_setting" })
end

local reveal = { "--reveal", type = "boolean", help = "show secrets unmasked" }

return {
  name = "config",
  category = "Tools",
  summary = "Show and change the CLI's settings (~/.aitbc/config.json)",
  description = "Precedence: command-line flag > environment variable > config file > default.",
  commands = {
    {
      name = "show",
      summary = "Every setting with its value and where it came from",
      list = "settings", id_field = "key", fields = { "key", "value", "source" },
      options = { reveal },
      examples = { "aitbc config show", "aitbc config show --output json" },
      run = function(ctx)
        local rows = {}
        for _, key in ipairs(config_mod().key_names()) do
          rows[#rows + 1] = {
            key = key, value = shown(key, ctx.settings[key], ctx.opts.reveal), source = ctx.config.sources[key],
          }
        end
        return { config_file = ctx.config.path, settings = require("aitbc.json").array(rows) }, function(data, out)
          out:print(out:format_table(data.settings, { "key", "value", "source" }))
          out:print(out:style("config file: " .. data.config_file, "dim"))
        end
      end,
    },
    {
      name = "get",
      summary = "Print one setting's effective value",
      args = { { "key", help = "setting name, e.g. url" } },
      options = { reveal },
      examples = { "aitbc config get url" },
      run = function(ctx)
        local key = ctx.args.key
        check_key(key)
        local data = { key = key, value = shown(key, ctx.settings[key], ctx.opts.reveal), source = ctx.config.sources[key] }
        return data, function(d, out) out:print(d.value == nil and "" or tostring(d.value)) end
      end,
    },
    {
      name = "set",
      creates_config = true,
      summary = "Store a setting in the config file",
      args = { { "key", help = "setting name" }, { "value", help = "new value" } },
      examples = { "aitbc config set url http://127.0.0.1:8000", "aitbc config set output json" },
      run = function(ctx)
        local config = config_mod()
        local key = ctx.args.key
        check_key(key)
        local value, why = config.check(key, ctx.args.value)
        if value == nil then
          errors.raise("usage", "invalid value for " .. key .. ": " .. why, nil, { code = "invalid_value" })
        end
        local file = ctx.config.file
        file[key] = value
        assert(config.write_file(ctx.config.path, file))
        local data = { key = key, value = shown(key, value), path = ctx.config.path }
        return data, function(d, out)
          out:success(string.format("%s = %s (saved to %s)", d.key, tostring(d.value), d.path))
          local env = config.keys[key].env
          if env and (require("aitbc.sys").getenv(env) or "") ~= "" then
            out:warn(env .. " is set in the environment and takes precedence over the file")
          end
        end
      end,
    },
    {
      name = "unset",
      creates_config = true,
      summary = "Remove a setting from the config file (back to its default)",
      args = { { "key", help = "setting name" } },
      examples = { "aitbc config unset api_key" },
      run = function(ctx)
        local config = config_mod()
        local key = ctx.args.key
        check_key(key)
        local file = ctx.config.file
        local had = file[key] ~= nil
        file[key] = nil
        if had then assert(config.write_file(ctx.config.path, file)) end
        return { key = key, removed = had, path = ctx.config.path }, function(d, out)
          if d.removed then out:success(d.key .. " removed from " .. d.path)
          else out:print(d.key .. " was not set in " .. d.path) end
        end
      end,
    },
    {
      name = "path",
      creates_config = true,
      summary = "Print the config file's path",
      run = function(ctx)
        return { path = ctx.config.path }, function(d, out) out:print(d.path) end
      end,
    },
  },
}
