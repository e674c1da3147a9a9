-- sandbox_cases.lua - the bounded library against the stock one.
-- Loaded by tests/unit/test_sandbox.c with the stock libraries as string,
-- table, utf8 and the bounded ones as SB.string, SB.table, SB.utf8.
-- Returns the number of comparisons and a list of mismatches.

local S, T = string, SB.string
local count, bad = 0, {}

local function pack(ok, ...)
    return {ok = ok, n = select("#", ...), ...}
end

-- Call f(...) protected; errors keep their message (same call site for
-- both libraries, so the position prefixes agree).
local function callf(f, ...)
    local r = table.pack(f(...)) -- not a tail call: errors name 'f' for both
    return table.unpack(r, 1, r.n)
end
local function run(f, ...)
    return pack(pcall(callf, f, ...))
end

local function show(v)
    if type(v) == "string" then return string.format("%q", v) end
    return tostring(v)
end

local function same(a, b)
    if a.ok ~= b.ok or a.n ~= b.n then return false end
    for i = 1, a.n do
        if a[i] ~= b[i] and not (a[i] ~= a[i] and b[i] ~= b[i]) then return false end
    end
    return true
end

local function dump(r)
    local t = {}
    for i = 1, r.n do t[i] = show(r[i]) end
    return (r.ok and "ok " or "err ") .. table.concat(t, ", ")
end

local function check(what, a, b)
    count = count + 1
    if not same(a, b) and #bad < 20 then
        bad[#bad + 1] = what .. "\n  stock: " .. dump(a) .. "\n  mine:  " .. dump(b)
    end
end

-- every iteration of gmatch, flattened
local function all_gmatch(lib, s, p, init)
    local out = {}
    local it = lib.gmatch(s, p, init)
    for _ = 1, 200 do
        local r = pack(true, it())
        if r[1] == nil then break end
        for i = 1, r.n do out[#out + 1] = r[i] end
        out[#out + 1] = "|"
    end
    return table.unpack(out)
end

local function repl_fn(...)
    local n = select("#", ...)
    if n == 0 then return nil end
    local a = ...
    if a == "x" then return false end
    return "<" .. table.concat({...}, ",", 1, n) .. ">"
end
local repl_tab = {a = "A", b = false, ab = 1, ["("] = "P"}

local function compare_one(s, p)
    for _, init in ipairs({1, 2, -1, -3, 0, 100}) do
        check(("find(%q, %q, %d)"):format(s, p, init), run(S.find, s, p, init), run(T.find, s, p, init))
        check(("match(%q, %q, %d)"):format(s, p, init), run(S.match, s, p, init), run(T.match, s, p, init))
    end
    check(("find plain(%q, %q)"):format(s, p), run(S.find, s, p, 1, true), run(T.find, s, p, 1, true))
    check(("gmatch(%q, %q)"):format(s, p), run(all_gmatch, S, s, p), run(all_gmatch, T, s, p))
    check(("gmatch(%q, %q, 3)"):format(s, p), run(all_gmatch, S, s, p, 3), run(all_gmatch, T, s, p, 3))
    for _, r in ipairs({"[%0]", "%1-%1", "%%", "x", "%2", "%", "%z", repl_fn, repl_tab, 7}) do
        check(("gsub(%q, %q, %s)"):format(s, p, show(r)), run(S.gsub, s, p, r), run(T.gsub, s, p, r))
        check(("gsub(%q, %q, %s, 2)"):format(s, p, show(r)), run(S.gsub, s, p, r, 2), run(T.gsub, s, p, r, 2))
    end
end

-- A table of patterns meant to reach every construct and every error.
local subjects = {
    "", "a", "abc", "aaa", "hello world", "  key = value  ", "THE (quick) fox",
    "f(a(b)c)d", "x = 10, y = 20", "one;two;;three", "\0a\0b", "caf\xc3\xa9",
    "[[]]", "%d%s", "a.b-c+d*e?f", "$^", "abcabcabc", "2024-12-04T18:45:00Z",
    "THE (quick) fox\n jumps", "a\nb\r\nc",
}
local patterns = {
    "", "a", "b", "abc", ".", "..", "a*", "a+", "a-", "a?", "a-b", ".-b", ".*b",
    "^a", "^", "$", "a$", "^$", "^abc$", "%a+", "%d+", "%s*", "%w+", "%p", "%u",
    "%l+", "%x+", "%c", "%g+", "%A+", "%D", "%S+", "%W", "[abc]+", "[^abc]+",
    "[a-c]+", "[%a%d]+", "[%]]", "[]]", "[^]]", "[a-]", "[-a]", "[%-]", "[a%-z]",
    "()a()", "(a)(b)", "(a*(.)%w(%s*))", "(%w+)=(%w+)", "(%w+)%s*=%s*(%w+)",
    "%b()", "%b[]", "%bxy", "%b", "%b(", "%f[%w]%w+", "%f[%W]", "%f[%a]", "%fa",
    "(a)%1", "(%w)%1", "()%1", "%1", "(a", "a)", ")", "(()", "%", "[a", "[",
    "[^", "[%", "%0", "%g", "%.", "%%", "a%", "(.)(.)(.)(.)(.)(.)(.)(.)(.)(.)",
    "x*", "x-$", "^(.-)%s*$", "^%s*(.-)%s*$", "(.-);", "[^;]*", "([^;]*);?",
    "%d%d%d%d%-%d%d%-%d%d", "\0", "[\0-\31]", "[\128-\255]+", "[\xc3][\x80-\xbf]",
    "(h)(e)(l)(l)(o)", "a-a-a-b", "((a)(b))", "[%w_]+", "[^%s]+", "$a", "a$b",
    "^^", "%$", "(%$)", ".-$", "(.-)%1", "()", "(())", "%f[]", "%f[^]", "[^%d%s]",
}

for _, s in ipairs(subjects) do
    for _, p in ipairs(patterns) do
        compare_one(s, p)
    end
end

-- Too many captures, too deep: the same errors.
compare_one(("a"):rep(40), ("(a)"):rep(33))
compare_one(("a"):rep(300), ("a?"):rep(250))
compare_one(("a"):rep(300), ("a?"):rep(150))

-- Random patterns over a small alphabet (fixed seed: reproducible).
math.randomseed(20261204)
local atoms = {"a", "b", "c", "(", ")", ".", "%a", "%d", "%s", "%w", "%A", "[ab]", "%bab", "%b)(",
               "%f[^%w]", "%f[a-b]", "[%]a]", "[^%s%d]", "[a-]", "[]]", "[^]a]", "%3", "%0", "$",
               "^", "%f", "%b", "[%", "%g", "%p", "%P", "%x", "[\0-b]",
               "[^a]", "[a-c]", "[%d%s]", "()", "%b()", "%f[%w]", "%f[%s]", "%1", "%2",
               "x", " ", "1", "%(", "%)", "[", "%", "-", "]"}
local quants = {"", "", "", "*", "+", "-", "?"}
local alpha = {"a", "b", "c", "(", ")", " ", "1", "2", "x", "\0", "]", "-", "%", "\255", "A", "."}
for _ = 1, 4000 do
    local parts = {}
    if math.random(6) == 1 then parts[1] = "^" end
    for _ = 1, math.random(0, 8) do
        local a = atoms[math.random(#atoms)]
        if a == "()" or a:sub(1, 1) == "%" and a:sub(2, 2):match("[bf12]") then
            parts[#parts + 1] = a
        else
            parts[#parts + 1] = a .. quants[math.random(#quants)]
        end
        if math.random(8) == 1 then parts[#parts + 1] = "(" end
        if math.random(8) == 1 then parts[#parts + 1] = ")" end
    end
    if math.random(6) == 1 then parts[#parts + 1] = "$" end
    local p = table.concat(parts)
    local sp = {}
    for i = 1, math.random(0, 16) do sp[i] = alpha[math.random(#alpha)] end
    local s = table.concat(sp)
    check(("rand find(%q, %q)"):format(s, p), run(S.find, s, p), run(T.find, s, p))
    check(("rand match(%q, %q)"):format(s, p), run(S.match, s, p), run(T.match, s, p))
    check(("rand gmatch(%q, %q)"):format(s, p), run(all_gmatch, S, s, p), run(all_gmatch, T, s, p))
    check(("rand gsub(%q, %q)"):format(s, p), run(S.gsub, s, p, "<%0>"), run(T.gsub, s, p, "<%0>"))
    check(("rand gsub fn(%q, %q)"):format(s, p), run(S.gsub, s, p, repl_fn), run(T.gsub, s, p, repl_fn))
end

-- Argument handling of the other bounded string functions.
local args = {
    {S.rep, T.rep, {"ab", 3}, {"ab", 3, ","}, {"", 5}, {"x", 0}, {"x", -1}, {"", 3, "-"},
        {"x", 1, ","}, {"x", 2^31}, {"x"}, {nil, 2}, {"ab", 2.5}},
    {S.format, T.format, {"%d %s %q", 3, "x", "a\nb\0"}, {"%5.2s|%-5s|", "abc", true},
        {"%s %s", 1, nil}, {"%10.3f %x %g", 1.5, 255, 1e300}, {"%q", 1/0}, {"%q", 2^63},
        {"%", 1}, {"%123d", 1}, {"%s"}, {"%y", 1}, {"%5q", "a"}, {"%.3q", "a"},
        {"%s", setmetatable({}, {__tostring = function() return "T" end})},
        {"%s", setmetatable({}, {__tostring = function() return 1 end})},
        {"%-99.99s|", "x"}, {"%.99f", 1e308}, {"%c%c", 65, 66}, {"%i", "10"}, {"%d", 1.5}},
    {S.sub, T.sub, {"hello", 2, -2}, {"hello", -100, 100}, {"hello", 0}, {"hello"}},
    {S.upper, T.upper, {"aBc"}, {12}}, {S.byte, T.byte, {"abc", 1, -1}, {"abc", 10}},
    {S.char, T.char, {65, 66}, {256}}, {S.reverse, T.reverse, {"abc"}},
}
for _, group in ipairs(args) do
    for i = 3, #group do
        local a = group[i]
        check("string fn " .. dump(pack(true, table.unpack(a, 1, 4))),
              run(group[1], table.unpack(a, 1, 4)), run(group[2], table.unpack(a, 1, 4)))
    end
end

-- utf8, against the stock library.
local U, V = utf8, SB.utf8
local texts = {"", "abc", "caf\xc3\xa9", "\xe2\x82\xac\xf0\x9f\x98\x80", "\xff", "a\x80b",
               "\xc3", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\x80\x80\x80", "x\xc3\xa9\xc3", "\xc3\xa9\x80\x80z"}
for _, s in ipairs(texts) do
    for _, ij in ipairs({{}, {2}, {-1}, {1, -1}, {0}, {3, 2}, {1, 100}, {-100}}) do
        check("utf8.len " .. show(s), run(U.len, s, ij[1], ij[2]), run(V.len, s, ij[1], ij[2]))
        check("utf8.len lax " .. show(s), run(U.len, s, ij[1], ij[2], true), run(V.len, s, ij[1], ij[2], true))
        check("utf8.codepoint " .. show(s), run(U.codepoint, s, ij[1], ij[2]), run(V.codepoint, s, ij[1], ij[2]))
        check("utf8.codepoint lax " .. show(s), run(U.codepoint, s, ij[1], ij[2], true),
              run(V.codepoint, s, ij[1], ij[2], true))
    end
    for _, n in ipairs({0, 1, 2, 3, -1, -2, 5}) do
        for _, i in ipairs({false, 1, 2, 3, -1, 100}) do
            check(("utf8.offset %s %d %s"):format(show(s), n, tostring(i)),
                  run(U.offset, s, n, i or nil), run(V.offset, s, n, i or nil))
        end
    end
    local function codes(lib, str, lax)
        local out = {}
        for p, c in lib.codes(str, lax) do out[#out + 1] = p; out[#out + 1] = c end
        return table.unpack(out)
    end
    check("utf8.codes " .. show(s), run(codes, U, s), run(codes, V, s))
    check("utf8.codes iterator " .. show(s), run(function() local f = U.codes(s) return f(s, 1) end), run(function() local f = V.codes(s) return f(s, 1) end))
    check("utf8.codes lax " .. show(s), run(codes, U, s, true), run(codes, V, s, true))
end
for _, a in ipairs({{72, 0x20AC, 0x10FFFF}, {0x7FFFFFFF}, {-1}, {0x80000000}, {}, {"x"}}) do
    check("utf8.char", run(U.char, table.unpack(a)), run(V.char, table.unpack(a)))
end
check("utf8.charpattern", pack(true, U.charpattern), pack(true, V.charpattern))

-- table functions: same results on the same inputs.
local function tcopy(t) local c = {} for k, v in pairs(t) do c[k] = v end return c end
local function tdump(t) local o = {} for i = 1, #t do o[i] = tostring(t[i]) end return table.concat(o, " ") end
local function tcall(lib, name, t, ...)
    local c = tcopy(t)
    local r = pack(pcall(callf, lib[name], c, ...))
    for i = 1, r.n do if type(r[i]) == "table" then r[i] = "table" end end
    r[r.n + 1] = tdump(c)
    r.n = r.n + 1
    return r
end
local tabs = {{}, {1, 2, 3}, {"a", "b", "c", "d"}, {3, 1, 2, 5, 4}, {1, "x"}}
for _, t in ipairs(tabs) do
    check("concat", tcall(table, "concat", t, ","), tcall(SB.table, "concat", t, ","))
    check("concat ij", tcall(table, "concat", t, "-", 2, 3), tcall(SB.table, "concat", t, "-", 2, 3))
    check("concat bad", tcall(table, "concat", t, "", 1, 6), tcall(SB.table, "concat", t, "", 1, 6))
    check("insert", tcall(table, "insert", t, "z"), tcall(SB.table, "insert", t, "z"))
    check("insert pos", tcall(table, "insert", t, 1, "z"), tcall(SB.table, "insert", t, 1, "z"))
    check("insert bad", tcall(table, "insert", t, 9, "z"), tcall(SB.table, "insert", t, 9, "z"))
    check("insert args", tcall(table, "insert", t, 1, 2, 3), tcall(SB.table, "insert", t, 1, 2, 3))
    check("remove", tcall(table, "remove", t), tcall(SB.table, "remove", t))
    check("remove 1", tcall(table, "remove", t, 1), tcall(SB.table, "remove", t, 1))
    check("remove bad", tcall(table, "remove", t, 7), tcall(SB.table, "remove", t, 7))
    check("move", tcall(table, "move", t, 1, 3, 2), tcall(SB.table, "move", t, 1, 3, 2))
    check("move down", tcall(table, "move", t, 2, 4, 1), tcall(SB.table, "move", t, 2, 4, 1))
    check("move bad", tcall(table, "move", t, -1, math.maxinteger, 2),
          tcall(SB.table, "move", t, -1, math.maxinteger, 2))
    check("unpack", tcall(table, "unpack", t), tcall(SB.table, "unpack", t))
    local ok = pcall(table.sort, tcopy(t))
    if ok then
        check("sort", tcall(table, "sort", t), tcall(SB.table, "sort", t))
        check("sort desc", tcall(table, "sort", t, function(a, b) return a > b end),
              tcall(SB.table, "sort", t, function(a, b) return a > b end))
    else
        check("sort mixed", tcall(table, "sort", t), tcall(SB.table, "sort", t))
    end
end
for n = 0, 300, 7 do
    local t = {}
    for i = 1, n do t[i] = math.random(1, 50) end
    check("sort random " .. n, tcall(table, "sort", t), tcall(SB.table, "sort", t))
    local w = {}
    for i = 1, n do w[i] = ("k%03d"):format(math.random(1, 500)) end
    check("sort strings " .. n, tcall(table, "sort", w), tcall(SB.table, "sort", w))
end

return count, bad
