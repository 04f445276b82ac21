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

  it("writes yaml that quotes what would be misread", function()
    assert.equal('a: "yes"\nb:\n  - 1\n  - x\nc: "12"\nd: {}\n', yaml.encode { a = "yes", b = { 1, "x" }, c = "12", d = {} })
  end)

  it("refuses values JSON cannot hold", function()
    assert.has_error(function() json.encode { f = print } end)
  end)
end)
