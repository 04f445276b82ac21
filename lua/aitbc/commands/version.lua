--- aitbc version: this binary and the libraries inside it.
return {
  name = "version",
  category = "Tools",
  summary = "Show the version of aitbc and of its libraries",
  run = function()
    local sys = require "aitbc.native.sys"
    return {
      version = sys.version,
      lua = _VERSION,
      libcurl = require("aitbc.native.http").curl_version,
      sqlite = require("aitbc.native.db").sqlite_version,
      -- the database schema this binary's node writes (a release's manifest records it)
      schema_version = require("aitbc.node.store").SCHEMA_VERSION,
    }, function(d, out)
      out:print(string.format("aitbc %s (%s, libcurl %s, SQLite %s)", d.version, d.lua, d.libcurl, d.sqlite))
    end
  end,
}
