--- Job types: what the network runs, known alike to the node (which
-- refuses another at submit) and to clients (which say so before sending).
-- Inference is the one there is; agents, multimodal work, swarm shards and
-- training rounds come with spec §5, §7 and §11, each a type declared here.
local jobs = {}

jobs.TYPES = { "inference" }

--- check_type(name) -> true | nil, reason (naming the types there are).
function jobs.check_type(name)
  for _, t in ipairs(jobs.TYPES) do if name == t then return true end end
  return nil, string.format("unknown job type '%s': this network runs %s jobs", tostring(name),
    table.concat(jobs.TYPES, ", "))
end

return jobs
