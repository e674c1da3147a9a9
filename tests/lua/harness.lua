-- harness.lua - a small test runner for recd's Lua suites (stock lua5.4).
-- Each file: local t = require "harness"; t.test("name", fn) ...; t.done()
-- done() prints "RESULT passed=N failed=M" for tests/run.sh.
local M = {}
local passed, failed = 0, 0
local dirs = {}

function M.test(name, fn)
    local ok, err = xpcall(fn, function(e)
        return debug.traceback(tostring(e), 2)
    end)
    if ok then
        passed = passed + 1
        print("  ok   " .. name)
    else
        failed = failed + 1
        print("  FAIL " .. name .. "\n" .. err)
    end
end

local function fmt(v)
    if type(v) == "string" then return string.format("%q", v) end
    return tostring(v)
end

function M.eq(a, b, what)
    if a ~= b then
        error((what or "values differ") .. ": expected " .. fmt(b) .. ", got " .. fmt(a), 2)
    end
end

function M.near(a, b, tol, what)
    tol = tol or 1e-5
    if type(a) ~= "number" or math.abs(a - b) > tol * math.max(1, math.abs(b)) then
        error((what or "numbers differ") .. ": expected " .. fmt(b) .. ", got " .. fmt(a), 2)
    end
end

function M.truthy(v, what)
    if not v then error((what or "expected a true value") .. ", got " .. fmt(v), 2) end
end

-- Call fn expecting a recd error object named `name`; returns it.
function M.raises(name, fn, ...)
    local ok, err = pcall(fn, ...)
    if ok then error("expected error " .. name .. ", call succeeded", 2) end
    if type(err) ~= "table" then
        error("expected error object " .. name .. ", got " .. tostring(err), 2)
    end
    if err.name ~= name then
        error("expected error " .. name .. ", got " .. tostring(err), 2)
    end
    if type(err.message) ~= "string" or #err.message == 0 then
        error("error " .. name .. " carries no message", 2)
    end
    return err
end

-- A fresh empty directory, removed by done().
function M.tmpdir()
    local p = os.tmpname()
    os.remove(p)
    assert(os.execute("mkdir -p '" .. p .. "'"))
    dirs[#dirs + 1] = p
    return p
end

function M.done()
    for _, d in ipairs(dirs) do os.execute("rm -rf '" .. d .. "'") end
    print(string.format("RESULT passed=%d failed=%d", passed, failed))
    os.exit(failed == 0 and 0 or 1)
end

return M
