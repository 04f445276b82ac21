--- Federated averaging for distributed-training swarms (DESIGN.md §9,
-- Flower's FedAvg): each member trains a linear or logistic regression on
-- its shard of a CSV for E epochs of stochastic gradient descent, in the
-- miner's sandbox, and returns its weights and sample count; the
-- coordinator averages the weights by samples, for R rounds, and measures
-- the average on held-out records (every 5th record of the input).
--
-- TRAINER is Lua source: the sandbox runs it (called with the request it
-- returns the training function), and the node loads the same source for
-- its library (parse, predict, evaluate), so that members and coordinator
-- read records and score models alike.
local M = { MODELS = { logistic = true, linear = true }, HOLDOUT_EVERY = 5 }

M.TRAINER = [==[
local request = ...
local lib = {}

-- a CSV with a header of names; the label one column, the features the others (all numbers)
function lib.parse(csv, label)
  local header, li, names, rows, labels, n = nil, nil, {}, {}, {}, 0
  for line in csv:gmatch("[^\r\n]+") do
    n = n + 1
    local cells = {}
    for cell in (line .. ","):gmatch("([^,]*),") do cells[#cells + 1] = cell:match("^%s*(.-)%s*$") end
    if not header then
      header = cells
      li = label == nil and #cells or nil
      for i, c in ipairs(cells) do if c == label then li = i end end
      if not li then error("no column named " .. tostring(label) .. " (columns: " .. table.concat(cells, ", ") .. ")", 0) end
      if #cells < 2 then error("the CSV needs a label column and at least one feature column", 0) end
      for i, c in ipairs(cells) do if i ~= li then names[#names + 1] = c end end
    else
      if #cells ~= #header then
        error("record " .. (n - 1) .. " has " .. #cells .. " values, the header " .. #header, 0)
      end
      local x = {}
      for i, c in ipairs(cells) do
        local v = tonumber(c)
        if not v then error("record " .. (n - 1) .. ", column " .. header[i] .. ": '" .. c .. "' is not a number", 0) end
        if i == li then labels[#labels + 1] = v else x[#x + 1] = v end
      end
      rows[#rows + 1] = x
    end
  end
  if not header then error("the CSV is empty", 0) end
  return { names = names, label = header[li], rows = rows, labels = labels }
end

local function feature(x, j, scale)
  if not scale then return x[j] end
  return (x[j] - scale.mean[j]) / scale.std[j]
end

-- logistic: the probability of label 1; linear: the value
function lib.predict(model, w, x, scale)
  local s = w[1]
  for j = 1, #x do s = s + w[j + 1] * feature(x, j, scale) end
  if model ~= "logistic" then return s end
  if s >= 0 then return 1 / (1 + math.exp(-s)) end
  local e = math.exp(s)
  return e / (1 + e)
end

-- logistic: mean log loss and accuracy; linear: mean squared error
function lib.evaluate(model, w, data, scale)
  local loss, right = 0, 0
  for i, x in ipairs(data.rows) do
    local p, y = lib.predict(model, w, x, scale), data.labels[i]
    if model == "logistic" then
      local q = math.min(math.max(p, 1e-12), 1 - 1e-12)
      loss = loss - (y * math.log(q) + (1 - y) * math.log(1 - q))
      if (p >= 0.5) == (y >= 0.5) then right = right + 1 end
    else
      loss = loss + (p - y) ^ 2
    end
  end
  local n = math.max(1, #data.rows)
  return { loss = loss / n, accuracy = model == "logistic" and right / n or nil, samples = #data.rows }
end

-- epochs of stochastic gradient descent over the records in order, from the given weights
function lib.train(req)
  local data = lib.parse(req.input, req.label)
  local w = {}
  for j = 1, #data.names + 1 do w[j] = req.weights and req.weights[j] or 0 end
  for epoch = 1, req.epochs do
    for i, x in ipairs(data.rows) do
      local step = req.learning_rate * (lib.predict(req.model, w, x, req.scale) - data.labels[i])
      w[1] = w[1] - step
      for j = 1, #x do w[j + 1] = w[j + 1] - step * feature(x, j, req.scale) end
    end
    if emit then emit("epoch", { epoch = epoch, loss = lib.evaluate(req.model, w, data, req.scale).loss }) end
  end
  local fit = lib.evaluate(req.model, w, data, req.scale)
  return { answer = { weights = w, samples = #data.rows, loss = fit.loss, accuracy = fit.accuracy } }
end

if request == "library" then return lib end
return lib.train
]==]

local library
--- The trainer's functions on the host: parse, predict, evaluate, train.
function M.lib()
  if not library then
    local env = { math = math, string = string, table = table, tonumber = tonumber, tostring = tostring,
      ipairs = ipairs, pairs = pairs, error = error }
    library = assert(load(M.TRAINER, "=trainer", "t", env))("library")
  end
  return library
end

--- A task's CSV split for training: {header, train (CSV text), heldout
-- (parsed), scale {mean, std} of the training features, names, label}, or
-- nil and why.  Every HOLDOUT_EVERY-th record is held out (none when there
-- are fewer than that many).
function M.prepare(csv, label)
  local ok, data = pcall(M.lib().parse, csv, label)
  if not ok then return nil, tostring(data) end
  if #data.rows < 2 then return nil, "the CSV needs at least 2 records to train on" end
  local lines = {}
  for line in csv:gmatch("[^\r\n]+") do lines[#lines + 1] = line end
  local train_lines, heldout = { lines[1] }, { rows = {}, labels = {} }
  local sums, squares, n = {}, {}, 0
  for i, x in ipairs(data.rows) do
    if #data.rows >= M.HOLDOUT_EVERY and i % M.HOLDOUT_EVERY == 0 then
      heldout.rows[#heldout.rows + 1], heldout.labels[#heldout.labels + 1] = x, data.labels[i]
    else
      train_lines[#train_lines + 1] = lines[i + 1]
      n = n + 1
      for j, v in ipairs(x) do sums[j], squares[j] = (sums[j] or 0) + v, (squares[j] or 0) + v * v end
    end
  end
  local scale = { mean = {}, std = {} }
  for j = 1, #data.names do
    local mean = sums[j] / n
    local var = math.max(0, squares[j] / n - mean * mean)
    scale.mean[j], scale.std[j] = mean, var > 1e-12 and math.sqrt(var) or 1
  end
  return { train = table.concat(train_lines, "\n"), heldout = heldout, scale = scale, names = data.names,
    label = data.label }
end

--- Members' results {weights, samples} averaged by samples: -> weights,
-- samples, spread {max, mean}: how far members' weights lie from the
-- average (Euclidean), and relative to the average's length.
function M.average(results)
  local total, avg = 0, {}
  for _, r in ipairs(results) do
    total = total + r.samples
    for j, v in ipairs(r.weights) do avg[j] = (avg[j] or 0) + v * r.samples end
  end
  if total == 0 then return nil end
  for j = 1, #avg do avg[j] = avg[j] / total end
  local max, sum, norm = 0, 0, 0
  for _, v in ipairs(avg) do norm = norm + v * v end
  for _, r in ipairs(results) do
    local d = 0
    for j, v in ipairs(r.weights) do d = d + (v - avg[j]) ^ 2 end
    d = math.sqrt(d)
    max, sum = math.max(max, d), sum + d
  end
  norm = math.sqrt(norm)
  return avg, total, { max = max, mean = sum / #results, relative = norm > 0 and max / norm or nil }
end

return M
