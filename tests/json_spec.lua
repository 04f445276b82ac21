local json = require "aitbc.json"
local yaml = require "aitbc.yaml"

describe("json and yaml", function()
  it("encodes canonically: sorted keys, no spaces, explicit arrays", function()
    assert.equal('{"a":[1,2],"b":{"c":true,"d":null},"e":[],"f":1.5,"g":"x\\ny\\"z"}',
      json.encode { g = 'x\ny"z', f = 1.5, e = json.array(), b = { d = json.null, c = true }, a = { 1, 2 } })
    assert.equal("{}", json.encode {})
    assert.equal("9007199254740993", json.encode(9007199254740993))
  end)

  it("decodes and reports bad JSON with nil, err", function()
    assert.same({ a = { 1, 2 } }, json.decode('{"a":[1,2]}'))
    local v, err = json.decode("{bad")
    assert.is_nil(v)
    assert.matches("invalid JSON", err)
    assert.is_nil((json.decode(nil)))
  end)

  it("keeps an empty array an array through decode and encode, wherever it is", function()
    for _, text in ipairs { "[]", '{"a":[],"b":{},"c":[[],[ ],{"d":[]}]}', '{"s":"[]","t":"x\\"[]"}', "[1,[]]" } do
      assert.equal(json.encode(json.decode(text)), (text:gsub("%[ %]", "[]")))
    end
    assert.is_true(json.is_array(json.decode('{"models":[]}').models))
    assert.is_false(json.is_array(json.decode('{"models":{}}').models))
    -- what stands for an empty array while decoding cannot be forged by input
    local v = json.decode('["aitbc-empty-array-000000000000000000000000"]')
    assert.equal("aitbc-empty-array-000000000000000000000000", v[1])
    local _, err = json.decode('{"a":[],')
    assert.matches("at character 9", err) -- positions in the text as given
  end)

  it("writes yaml that quotes what would be misread", function()
    assert.equal('a: "yes"\nb:\n  - 1\n  - x\nc: "12"\nd: {}\n', yaml.encode { a = "yes", b = { 1, "x" }, c = "12", d = {} })
  end)

  it("refuses values JSON cannot hold", function()
    assert.has_error(function() json.encode { f = print } end)
    -- NaN and infinities are not JSON: an error, not a silent null
    assert.has_error(function() json.encode { x = 0 / 0 } end, "cannot encode NaN as JSON")
    assert.has_error(function() json.encode { math.huge } end, "cannot encode an infinite number as JSON")
    assert.has_error(function() json.encode(-math.huge) end)
  end)

  it("refuses NaN, infinities, hexadecimal and numbers beyond a double, naming where", function()
    for _, text in ipairs { "[NaN]", "[-NaN]", "[Infinity]", "[-Infinity]", "[0x10]", '{"a": nan}', '{"a": inf}' } do
      local v, err = json.decode(text)
      assert.is_nil(v, text)
      assert.matches("invalid JSON", err)
    end
    local v, err, where = json.decode('{"a": {"b": [1, 2, 1e999]}}')
    assert.is_nil(v)
    assert.equal("a.b[3]", where)
    assert.equal("invalid JSON: a number out of range at a.b[3]", err)
    assert.is_nil((json.decode("-1e400")))
    assert.same({ 1e308, 0 }, json.decode("[1e308, 1e-400]"))
  end)

  it("nests as deep in decoding as in encoding, and decodes less deep on request", function()
    local function nested(levels) return string.rep("[", levels) .. "1" .. string.rep("]", levels) end
    assert.equal(64, json.MAX_DEPTH)
    local deepest = assert(json.decode(nested(json.MAX_DEPTH)))
    assert.equal(nested(json.MAX_DEPTH), json.encode(deepest))
    local v, err = json.decode(nested(json.MAX_DEPTH + 1))
    assert.is_nil(v)
    assert.matches("nested", err)
    assert.has_error(function() json.encode { deepest } end)
    assert.is_table(json.decode(nested(10), 10))
    local v2, err2, where = json.decode('{"a": [[1]]}', 2)
    assert.is_nil(v2)
    assert.equal("invalid JSON: nesting deeper than 2 levels at a[1]", err2)
    assert.equal("a[1]", where)
  end)

  it("writes valid UTF-8 whatever bytes it is given", function()
    local r = "\\ufffd" -- U+FFFD REPLACEMENT CHARACTER, escaped
    assert.equal('["caf' .. r .. '","' .. r:rep(3) .. '","' .. r:rep(2) .. '","' .. r:rep(2) .. 'x","' .. r:rep(4) .. '"]', json.encode {
      "caf\xe9", -- Latin-1
      "\xed\xa0\x80", -- a surrogate
      "\xc0\xaf", -- overlong
      "\xe2\x82x", -- cut short
      "\xf4\x90\x80\x80", -- past U+10FFFF
    })
    local valid = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf \x7f"
    assert.equal('"' .. valid:gsub("\x7f", "\\u007f") .. '"', json.encode(valid))
    assert.equal(valid, json.decode(json.encode { valid })[1])
  end)
end)
