-- The examples of docs/lua-api.md, run for real.
--
-- Every ```lua block of the page runs, in the page's order, in one shared
-- environment over one fresh data folder: what a block creates (items,
-- events, `db`, top-level locals) is there for the blocks after it. The
-- page's data folder "/tmp/demo" stands for that temporary folder.
--
-- A line `expr --> value` (or `local a, b = expr --> v1, v2`) is checked:
-- expr is evaluated once, where it stands, and its results compared with
-- the values after "-->", read as Lua. Strings, booleans and nil must be
-- equal; numbers agree to two decimals (0.005, plus 1e-4 of the value);
-- tables hold the same keys and elements, recursively. A `...` at the end
-- of a table or of the value list allows more: `{{id = "m2", ...}, ...}`
-- checks only the first hit's id, `{...}` accepts any table.
--
-- Lastly, every function of the module (recd.*, the db methods, the bitmap
-- methods and #bitmap) must be both named in the page's text (its tables,
-- outside the examples) and called by one of its examples.
local t = require "harness"
local recd = require "recd"

-- Repository root, from this file's path (<root>/tests/lua/test_docs.lua).
local ROOT = (((arg and arg[0]) or ""):match("^(.*)/[^/]*$") or ".") .. "/../../"
local DOC = "docs/lua-api.md"
local DEMO_DIR = "/tmp/demo"

local function read(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("a")
    f:close()
    return s
end

local text = read(ROOT .. DOC)

-- The page's ```lua blocks ({line = first code line, lines = {...}}), and
-- its text without them.
local blocks, prose = {}, {}
do
    local n, cur = 0, nil
    for line in (text .. "\n"):gmatch("([^\n]*)\n") do
        n = n + 1
        if cur then
            if line:match("^```%s*$") then
                blocks[#blocks + 1] = cur
                cur = nil
            else
                cur.lines[#cur.lines + 1] = line
            end
        elseif line:match("^```lua%s*$") then
            cur = {line = n + 1, lines = {}}
        else
            prose[#prose + 1] = line
        end
    end
    prose = table.concat(prose, "\n")
    assert(not cur, DOC .. ": unterminated ```lua block at line " .. (cur and cur.line or 0))
end

-- ---- values after "-->" ---------------------------------------------------

local MORE = setmetatable({}, {__tostring = function() return "..." end})

local function show(v, depth)
    depth = depth or 0
    if v == MORE then return "..." end
    if type(v) == "string" then return string.format("%q", v) end
    if type(v) ~= "table" or depth > 3 then return tostring(v) end
    local parts, n = {}, #v
    for i = 1, n do parts[#parts + 1] = show(v[i], depth + 1) end
    local keys = {}
    for k in pairs(v) do
        if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
    end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    for _, k in ipairs(keys) do
        parts[#parts + 1] = tostring(k) .. " = " .. show(v[k], depth + 1)
    end
    return "{" .. table.concat(parts, ", ") .. "}"
end

-- Does got match expected? Returns true, or false and where it differs.
local function match(got, want, path)
    if type(want) == "number" then
        if type(got) ~= "number" then return false, path end
        return math.abs(got - want) <= 0.005 + 1e-4 * math.abs(want), path
    end
    if type(want) ~= "table" then
        return got == want, path
    end
    if type(got) ~= "table" then return false, path end
    local n = #want
    local open = n > 0 and want[n] == MORE
    if open then n = n - 1 end
    for i = 1, n do
        local ok, where = match(got[i], want[i], path .. "[" .. i .. "]")
        if not ok then return false, where end
    end
    for k, v in pairs(want) do
        if not (math.type(k) == "integer" and k >= 1 and k <= #want) then
            local ok, where = match(got[k], v, path .. "." .. tostring(k))
            if not ok then return false, where end
        end
    end
    if not open then
        if #got ~= n then return false, "the length of " .. path end
        for k in pairs(got) do
            if want[k] == nil and not (math.type(k) == "integer" and k >= 1 and k <= n) then
                return false, path .. "." .. tostring(k) .. " (not shown)"
            end
        end
    end
    return true
end

-- The values written after "-->", as a packed list (MORE stands for "...").
local function expected(src, where)
    local body = src:gsub("%.%.%.", "__MORE")
    local f, err = load("return " .. body, "=" .. where, "t", {__MORE = MORE})
    if not f then error(where .. ": cannot read the value after '-->': " .. err, 0) end
    return table.pack(f())
end

local checks = {} -- [id] = {where, want, src}
local checked = 0

local function check(id, ...)
    local c = checks[id]
    local got = table.pack(...)
    local want = c.want
    local open = want.n > 0 and want[want.n] == MORE
    local n = open and want.n - 1 or want.n
    local ok, where = true, nil
    if (open and got.n < n) or (not open and got.n ~= n) then
        ok, where = false, "the number of values"
    end
    for i = 1, n do
        if not ok then break end
        ok, where = match(got[i], want[i], n > 1 and ("value " .. i) or "value")
    end
    if not ok then
        local shown = {}
        for i = 1, got.n do shown[i] = show(got[i]) end
        error(string.format("%s: %s differs: expected %s, got %s", c.where, where,
                            c.src, table.concat(shown, ", ")), 0)
    end
    checked = checked + 1
    return ...
end

-- Rewrite a block into a chunk: `expr --> v` lines become checks, and the
-- block's top-level locals become variables of the shared environment.
local function compile(block, dir)
    local out = {}
    for i, line in ipairs(block.lines) do
        local where = DOC .. ":" .. (block.line + i - 1)
        local code, want = line:match("^(.-)%s+%-%->%s*(.-)%s*$")
        if code and not code:find("--", 1, true) and code:match("%S") then
            local id = #checks + 1
            checks[id] = {where = where, want = expected(want, where), src = want}
            code = code:gsub(";%s*$", "")
            local lhs, rhs = code:match("^(%s*local%s+[%a_][%w_%s,]-=)%s*(.+)$")
            if not lhs then lhs, rhs = code:match("^(%s*[%a_][%w_]*%s*=)%s*([^=].*)$") end
            if lhs then
                line = lhs .. " __check(" .. id .. ", " .. rhs .. ")"
            else
                line = code:match("^%s*") .. "__check(" .. id .. ", " .. code:match("^%s*(.-)$") .. ")"
            end
        end
        line = line:gsub("^local%s+function%s", "function ")
        line = line:gsub("^local%s+([%a_][%w_%s,]-)%s*=", "%1 =")
        out[i] = line
    end
    local src = table.concat(out, "\n")
    src = src:gsub('"' .. DEMO_DIR:gsub("%p", "%%%0") .. '"', string.format("%q", dir))
    return src
end

-- ---- every function, named and called ---------------------------------------

local calls = {}
local function count(tbl, prefix, names)
    for name, f in pairs(tbl) do
        if type(f) == "function" then
            local key = prefix .. name
            calls[key] = 0
            names[#names + 1] = key
            tbl[name] = function(...)
                calls[key] = calls[key] + 1
                return f(...)
            end
        end
    end
end

local names = {}
local reg = debug.getregistry()
count(recd, "recd.", names)
count(reg["recd.db"].__index, "db:", names)
count(reg["recd.bitmap"].__index, "bm:", names)
do -- #bitmap
    local mt = reg["recd.bitmap"]
    local len = mt.__len
    calls["#bm"] = 0
    names[#names + 1] = "#bm"
    mt.__len = function(b)
        calls["#bm"] = calls["#bm"] + 1
        return len(b)
    end
end
table.sort(names)

-- ---- the run ------------------------------------------------------------------

local dir = t.tmpdir() .. "/demo"
local env = setmetatable({
    __check = check,
    print = function() end, -- the examples' output is not part of the report
}, {__index = _G})

t.test(DOC .. " has lua examples", function()
    t.truthy(#blocks >= 10, "at least 10 ```lua blocks, found " .. #blocks)
end)

for _, b in ipairs(blocks) do
    local first = ""
    for _, l in ipairs(b.lines) do
        if l:match("%S") then first = l:match("^%s*(.-)%s*$") break end
    end
    t.test(string.format("block at line %d: %s", b.line, first:sub(1, 50)), function()
        -- Padded so that the chunk's line numbers are the page's.
        local src = string.rep("\n", b.line - 1) .. compile(b, dir)
        local f, err = load(src, "@" .. DOC, "t", env)
        if not f then error(err, 0) end
        f()
    end)
end

t.test("every --> value was checked", function()
    t.eq(checked, #checks, "checked values")
    t.truthy(checked >= 40, "at least 40 checked values, found " .. checked)
end)

t.test("every function of the module is named and called by an example", function()
    local missing = {}
    for _, key in ipairs(names) do
        local name = key:match("[%.:](.*)$") or key
        local named
        if key == "#bm" then
            named = prose:find("#bm", 1, true)
        elseif key:sub(1, 5) == "recd." then
            named = prose:find("recd." .. name, 1, true)
        else
            local pre = key:sub(1, 3) -- "db:" or "bm:"
            named = prose:find(pre .. name .. "(", 1, true) or prose:find(pre .. name .. "{", 1, true)
        end
        if not named then missing[#missing + 1] = key .. " (not in the text of " .. DOC .. ")" end
        if calls[key] == 0 then missing[#missing + 1] = key .. " (no example calls it)" end
    end
    if #missing > 0 then error("undocumented: " .. table.concat(missing, ", "), 0) end
end)

t.done()
