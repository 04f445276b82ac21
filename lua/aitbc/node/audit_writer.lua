--- The node's audit writer, a thread of its own (sys.thread): commits the
-- rows request handlers queue, in batches, then marks them committed so the
-- server lets their answers go.  A write that fails is retried: an answer
-- never leaves without its row.  Refused requests (401) are counted here
-- too.  Ends when the queue is closed and empty.
local json = require "aitbc.json"
local log = require "aitbc.node.log"
local store_mod = require "aitbc.node.store"
local sys = require "aitbc.sys"

return function(config_text)
  local config = assert(json.decode(config_text))
  local store = assert(store_mod.open(config.db_path))
  local logger = log.open(config.log_path, config.log_level, "coordinator")
  while true do
    local rows, last = store:audit_take(0.1) -- often enough for the refusals too
    if rows and #rows > 0 then
      local ok, err = pcall(store.audit_write, store, rows)
      while not ok do
        logger:error("audit write failed; retrying", { error = tostring(err), rows = #rows })
        sys.sleep(0.25)
        ok, err = pcall(store.audit_write, store, rows)
      end
      store:audit_commit(last)
    end
    local rok, rerr = pcall(store.audit_refused_flush, store) -- refusals, counted per address and minute
    if not rok then logger:error("audit write failed", { error = tostring(rerr) }) end
    if not rows then break end
  end
  store:close()
end
