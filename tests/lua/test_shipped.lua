-- The shipped strategies (scripts/) and policies (policies/) against a real
-- engine, each loaded the way the server loads it: as text, in a sandboxed
-- environment holding only the allowed globals and `rec`.
local t = require "harness"
local recd = require "recd"

-- Repository root, from this file's path (<root>/tests/lua/test_shipped.lua).
local ROOT = (((arg and arg[0]) or ""):match("^(.*)/[^/]*$") or ".") .. "/../../"

local STRATEGIES = {"popular", "trending", "similar", "personal", "graph", "hybrid"}
local POLICIES = {"online_mf", "cooccur", "counters", "explore", "fatigue", "seen",
                  "diversity", "rules", "ease"}

local SAFE = {"assert", "error", "ipairs", "next", "pairs", "pcall", "xpcall", "select",
              "tonumber", "tostring", "type", "rawequal", "rawget", "rawlen", "rawset",
              "setmetatable", "getmetatable"}

local function copy(tbl)
    local c = {}
    for k, v in pairs(tbl) do c[k] = v end
    return c
end

-- The sandbox: copies of the safe library, os.time/clock/date, a quiet
-- print, and rec. Writing a global raises: state must live in the engine.
local function sandbox(db)
    local env = {}
    for _, k in ipairs(SAFE) do env[k] = _G[k] end
    for _, lib in ipairs({"string", "table", "math", "utf8", "coroutine"}) do
        env[lib] = copy(_G[lib])
    end
    env.string.dump = nil
    env.os = {time = os.time, clock = os.clock, date = os.date}
    env.print = function() end
    env.rec = db
    return setmetatable(env, {__newindex = function(_, k)
        error("script assigned the global '" .. tostring(k) .. "'", 2)
    end})
end

local function load(kind, name, db)
    local file = ROOT .. kind .. "/" .. name .. ".lua"
    local f, err = loadfile(file, "t", sandbox(db))
    assert(f, err)
    local m = f()
    assert(type(m) == "table", file .. " must return a table")
    if m.on_load then m.on_load() end
    return m
end

local function strategy(name, db) return load("scripts", name, db) end
local function policy(name, db) return load("policies", name, db) end

local function ids(hits)
    local out = {}
    for i, h in ipairs(hits) do out[i] = tostring(h.id) end
    return table.concat(out, ",")
end

local function cluster(id) return tostring(id):sub(1, 1) end

local function count_cluster(hits, c, n)
    local k = 0
    for i = 1, math.min(n or #hits, #hits) do
        if cluster(hits[i].id) == c then k = k + 1 end
    end
    return k
end

local function has(hits, id)
    for _, h in ipairs(hits) do if h.id == id then return true end end
    return false
end

local function descending(hits)
    for i = 2, #hits do
        if hits[i].score > hits[i - 1].score then return false end
    end
    return true
end

-- Hand events to the policies the way the server does: a batch to
-- on_events, each event to on_event.
local function learn(db, pols, evs)
    local b = db:event_batch(evs)
    for _, p in ipairs(pols or {}) do
        if p.on_events then
            p.on_events(b)
        elseif p.on_event then
            for _, ev in ipairs(evs) do p.on_event(ev) end
        end
    end
end

-- One event, the way the server does it: stored by the engine, then given
-- to the policies.
local function event(db, pols, user, item, typ, ts)
    local seq, w = db:event{user = user, item = item, type = typ, ts = ts}
    learn(db, pols, {{user = user, item = item, type = typ, weight = w, ts = ts or os.time(), seq = seq}})
    return w
end

local DIM = 8
-- A unit-ish vector near cluster c's axis.
local function near(c, spread)
    local axis = ({A = 1, B = 2, C = 3})[c]
    local v = {}
    for d = 1, DIM do v[d] = (math.random() - 0.5) * (spread or 0.2) end
    v[axis] = v[axis] + 1.0
    return v
end

-- Three clusters A, B, C of 8 items (A1..A8 ...) with content vectors,
-- six background users per cluster clicking five of their cluster's items,
-- and one brand-new item per cluster (A9, B9, C9: a vector, no events).
-- Options: content (default true), policies (the event feed).
local function world(opts)
    opts = opts or {}
    math.randomseed(20240607)
    local db = recd.open(t.tmpdir(), {no_sync = true, seed = 7})
    local pols = {}
    for _, name in ipairs(opts.policies or {"counters", "online_mf"}) do
        pols[#pols + 1] = policy(name, db)
    end
    local now = os.time()
    db:batch(function()
        for _, c in ipairs({"A", "B", "C"}) do
            for i = 1, 9 do
                local vecs = opts.content ~= false and {content = near(c)} or nil
                db:item_put(c .. i, {category = c}, vecs)
            end
        end
        local ts = now - 7200
        for u = 1, 6 do
            for _, c in ipairs({"A", "B", "C"}) do
                for j = 0, 4 do
                    ts = ts + 1
                    event(db, pols, "bg" .. c .. u, c .. ((u + j) % 8 + 1), "click", ts)
                end
            end
        end
    end)
    return db, pols, now
end

-- ---------------------------------------------------------------------------

t.test("every file loads in the sandbox, has its contract, sets no global", function()
    local db = recd.open(t.tmpdir(), {no_sync = true})
    for _, name in ipairs(STRATEGIES) do
        local m = strategy(name, db)
        t.eq(type(m.recommend), "function", name .. ".recommend")
    end
    for _, name in ipairs(POLICIES) do
        local m = policy(name, db)
        t.truthy(m.on_load or m.on_event or m.on_events or m.rerank, name .. " has a hook")
        for _, f in ipairs({"on_load", "on_event", "on_events", "rerank"}) do
            t.truthy(m[f] == nil or type(m[f]) == "function", name .. "." .. f)
        end
    end
end)

t.test("an empty engine: every strategy answers a brand-new user, every rerank copes", function()
    local db = recd.open(t.tmpdir(), {no_sync = true})
    for _, name in ipairs(STRATEGIES) do
        local r = strategy(name, db).recommend({user = "nobody", n = 5, now = os.time(), rec = db})
        t.eq(type(r), "table", name)
        t.eq(#r, 0, name .. " has nothing to offer")
    end
    db:item_put("x")
    for _, name in ipairs(POLICIES) do
        local p = policy(name, db)
        if p.rerank then
            local out = p.rerank({user = "nobody", n = 1, now = os.time(), rec = db},
                                 {{id = "x", score = 1}})
            t.eq(type(out), "table", name)
        end
    end
end)

t.test("popular: most engaged first, seen / excluded / inactive left out", function()
    local db = recd.open(t.tmpdir(), {no_sync = true})
    local pols = {policy("counters", db)}
    local now = os.time()
    for u = 1, 5 do event(db, pols, "u" .. u, "P1", "click", now - 60) end
    for u = 1, 3 do event(db, pols, "v" .. u, "P2", "click", now - 60) end
    event(db, pols, "w1", "P3", "view", now - 60)
    event(db, pols, "w1", "P4", "skip", now - 60)
    local pop = strategy("popular", db)
    t.eq(ids(pop.recommend({user = "new", n = 10, now = now})), "P1,P2,P3",
         "by decayed weight; negative feedback counts nothing")
    t.eq(ids(pop.recommend({user = "u1", n = 10, now = now})), "P2,P3", "seen P1 left out")
    t.eq(ids(pop.recommend({user = "u1", n = 10, now = now, allow_seen = true})), "P1,P2,P3")
    t.eq(ids(pop.recommend({user = "new", n = 10, now = now, exclude = {"P2"}})), "P1,P3")
    t.eq(ids(pop.recommend({user = "new", n = 1, now = now})), "P1", "n respected")
    db:item_put("P1", nil, nil, false)
    t.eq(ids(pop.recommend({user = "new", n = 10, now = now})), "P2,P3", "inactive left out")
    -- decay: P2's clicks, three months later, weigh less than a fresh view
    event(db, pols, "w2", "P5", "view", now + 90 * 86400)
    t.eq(pop.recommend({user = "new", n = 1, now = now + 90 * 86400})[1].id, "P5")
end)

t.test("trending: a spiking item beats a steadily popular one; thin evidence left out", function()
    local db = recd.open(t.tmpdir(), {no_sync = true})
    local pols = {policy("counters", db)}
    local now = os.time()
    db:batch(function()
        for k = 0, 47 do event(db, pols, "s" .. k, "steady", "click", now - 3600 * k) end
        for k = 1, 6 do event(db, pols, "k" .. k, "spike", "click", now - 200 * k) end
        event(db, pols, "x1", "one_click", "click", now - 10)
        for k = 1, 20 do event(db, pols, "o" .. k, "old", "click", now - 2 * 86400) end
    end)
    local tr = strategy("trending", db)
    local r = tr.recommend({user = "me", n = 10, now = now})
    t.eq(r[1].id, "spike", "the spike leads: " .. ids(r))
    t.truthy(r[1].score > 3, "a spike's lift is large")
    t.eq(r[2].id, "steady")
    t.truthy(r[2].score < 2, "a steady item's lift is near 1")
    t.truthy(not has(r, "one_click"), "one click is not a trend")
    t.truthy(not has(r, "old"), "yesterday's burst is over")
    t.truthy(descending(r))
    t.eq(ids(tr.recommend({user = "k1", n = 10, now = now})), "steady", "seen spike left out")
    t.eq(#tr.recommend({user = "me", n = 10, now = now, exclude = {"spike", "steady"}}), 0)
end)

t.test("similar: same-cluster items by content, co-occurrence without a vector", function()
    local db, pols, now = world()
    local sim = strategy("similar", db)
    local r = sim.recommend({user = "nobody", n = 5, now = now, context = {item = "B2"}})
    t.eq(#r, 5)
    t.eq(count_cluster(r, "B"), 5, "content neighbours of B2: " .. ids(r))
    t.truthy(not has(r, "B2"), "not the item itself")
    t.eq(r[1].why, "content")
    -- no context: the user's last positive item
    event(db, pols, "me", "C3", "click", now)
    event(db, pols, "me", "A4", "skip", now + 1)
    r = sim.recommend({user = "me", n = 4, now = now + 2})
    t.eq(count_cluster(r, "C"), 4, "anchored on C3 (the skip is not an anchor): " .. ids(r))
    t.truthy(not has(r, "C3") and not has(r, "A4"), "seen items left out")
    r = sim.recommend({user = "me", n = 4, now = now + 2, context = {item = 1.5}})
    t.eq(count_cluster(r, "C"), 4, "an unusable context item falls back to history")
    r = sim.recommend({user = "me", n = 20, now = now + 2, exclude = {"C1"}})
    t.truthy(not has(r, "C1"), "exclude honoured")
    -- an item without a vector: co-occurrence neighbours
    db:batch(function()
        for u = 1, 4 do
            event(db, pols, "nv" .. u, "novec1", "click", now)
            event(db, pols, "nv" .. u, "novec2", "click", now + 1)
        end
        event(db, pols, "nv1", "novec3", "view", now + 2)
    end)
    r = sim.recommend({user = "nobody", n = 5, now = now, context = {item = "novec1"}})
    t.eq(ids(r), "novec2,novec3", "co-occurrence, strongest first")
    t.eq(r[1].why, "cooccurrence")
    t.eq(#sim.recommend({user = "nobody", n = 5, now = now}), 0, "no anchor, no answer")
    t.eq(#sim.recommend({user = "nobody", n = 5, now = now, context = {item = "unknown"}}), 0)
end)

t.test("personal: after MF training the user's cluster comes first", function()
    -- no content space here: MF alone
    local db, pols = world({content = false})
    local mf = pols[2]
    local now = os.time()
    event(db, pols, "meA", "A1", "click", now)
    event(db, pols, "meA", "A2", "click", now + 1)
    event(db, pols, "meC", "C5", "click", now)
    event(db, pols, "meC", "C6", "click", now + 1)
    -- more epochs over everyone's history, through the policy
    for _ = 1, 40 do
        for _, u in ipairs({"meA", "meC", "bgA1", "bgA2", "bgA3", "bgA4", "bgA5", "bgA6",
                            "bgB1", "bgB2", "bgB3", "bgB4", "bgB5", "bgB6",
                            "bgC1", "bgC2", "bgC3", "bgC4", "bgC5", "bgC6"}) do
            local evs = {}
            for _, h in ipairs(db:history(u)) do
                evs[#evs + 1] = {user = u, item = h.item, type = h.type, weight = h.weight, ts = h.ts}
            end
            learn(db, {mf}, evs)
        end
    end
    local p = strategy("personal", db)
    local ra = p.recommend({user = "meA", n = 4, now = now})
    t.eq(#ra, 4)
    t.eq(count_cluster(ra, "A", 4), 4, "meA: " .. ids(ra))
    t.truthy(not has(ra, "A1") and not has(ra, "A2"), "seen left out")
    t.eq(ra[1].why, "mf")
    local rc = p.recommend({user = "meC", n = 4, now = now, exclude = {"C1"}})
    t.eq(count_cluster(rc, "C", 4), 4, "meC: " .. ids(rc))
    t.truthy(not has(rc, "C1"), "exclude honoured")
    t.eq(#p.recommend({user = "brand-new", n = 4, now = now}), 0, "no vector, no answer")
end)

t.test("personal: the content profile follows the newest engagement", function()
    local db = world({policies = {"counters"}}) -- no MF: content alone
    local p = strategy("personal", db)
    local now = os.time()
    db:event{user = "me", item = "A1", type = "view", ts = now - 100}
    db:event{user = "me", item = "B1", type = "purchase", ts = now - 10}
    db:event{user = "me", item = "B2", type = "click", ts = now - 5}
    local r = p.recommend({user = "me", n = 7, now = now})
    t.eq(count_cluster(r, "B", 7), 7, "weighted to the recent purchases: " .. ids(r))
    t.eq(r[1].why, "content")
    t.truthy(has(r, "B9"), "a brand-new item with a vector surfaces")
    t.truthy(not has(r, "B1") and not has(r, "B2"))
end)

t.test("graph: walks reach co-visited items, never seen ones", function()
    local db, pols, now = world()
    event(db, pols, "me", "B1", "click", now)
    event(db, pols, "me", "B2", "click", now + 1)
    local g = strategy("graph", db)
    local r = g.recommend({user = "me", n = 5, now = now})
    t.truthy(#r >= 4, "walks found items: " .. ids(r))
    t.eq(count_cluster(r, "B"), #r, "only items co-visited with B1, B2: " .. ids(r))
    t.truthy(not has(r, "B1") and not has(r, "B2"))
    t.truthy(not has(r, "B9"), "an item nobody touched is unreachable")
    r = g.recommend({user = "me", n = 10, now = now, exclude = {"B3"}})
    t.truthy(not has(r, "B3"))
    r = g.recommend({user = "me", n = 10, now = now, allow_seen = true})
    t.truthy(has(r, "B1") or has(r, "B2"), "allow_seen keeps the seeds")
    t.eq(#g.recommend({user = "brand-new", n = 5, now = now}), 0)
end)

t.test("hybrid: cold start gets popular items; a switch to cluster B shows at once", function()
    local db, pols, now = world()
    local h = strategy("hybrid", db)
    -- the most popular item, clearly
    for u = 1, 6 do event(db, pols, "fan" .. u, "C7", "purchase", now) end
    local r = h.recommend({user = "brand-new", n = 5, now = now})
    t.eq(#r, 5)
    t.eq(r[1].id, "C7", "cold start leads with the most popular: " .. ids(r))
    t.eq(r[1].why, "popular")
    t.truthy(descending(r))

    for i = 1, 4 do event(db, pols, "me", "A" .. i, "click", now + i) end
    r = h.recommend({user = "me", n = 5, now = now + 10})
    t.truthy(count_cluster(r, "A", 5) >= 4, "an A user gets A items: " .. ids(r))
    for i = 1, 4 do t.truthy(not has(r, "A" .. i), "seen A" .. i .. " left out") end

    for i = 1, 3 do event(db, pols, "me", "B" .. i, "click", now + 10 + i) end
    r = h.recommend({user = "me", n = 5, now = now + 20})
    t.truthy(count_cluster(r, "B", 5) >= 4, "after three B clicks, B items next: " .. ids(r))
    -- a brand-new B item (a vector, no events) ranks by content alone: above
    -- the other new items, and explore can put it in a shown slot
    r = h.recommend({user = "me", n = 27, now = now + 20})
    local pos = {}
    for i, c in ipairs(r) do pos[c.id] = i end
    t.truthy(pos.B9 and pos.A9 and pos.C9 and pos.B9 < pos.A9 and pos.A9 < pos.C9,
             "new items by content taste: " .. ids(r))
    local ex = policy("explore", db)
    db:batch(function()
        for _, c in ipairs({"A", "B", "C"}) do
            for i = 1, 8 do
                db:counter_add("impressions", c .. i, 1000, now)
                db:counter_add("clicks", c .. i, 30, now)
            end
        end
    end)
    math.randomseed(5)
    local shown = 0
    for _ = 1, 30 do
        -- five slots (one for exploration): B9 does not make them by
        -- content taste alone, and competes there with the other new items
        local req = {user = "me", n = 5, now = now + 20, rec = db}
        local ranked = h.recommend(req)
        t.truthy(not has(ranked, "B9"), "B9 is not in the top 5 by itself: " .. ids(ranked))
        for _, c in ipairs(ex.rerank(req, ranked)) do
            if c.id == "B9" and c.why == "explore" then shown = shown + 1 end
        end
    end
    t.truthy(shown >= 5, "hybrid + explore show the new B9 (" .. shown .. "/30)")
    -- a preview (record = false) is shown to nobody: nothing explored
    for _ = 1, 10 do
        local req = {user = "me", n = 10, now = now + 20, rec = db, record = false}
        local ranked = h.recommend(req)
        local out = ex.rerank(req, ranked)
        t.eq(ids(out), ids(ranked), "a preview keeps its ranking")
    end
    -- a long list (one sort) and a short one (a selection of the best):
    -- both best first, no item twice
    for _, len in ipairs({100, 10, 1}) do
        local l = h.recommend({user = "me", n = len, now = now + 20})
        local seen = {}
        for _, c in ipairs(l) do
            t.truthy(not seen[c.id], "twice: " .. tostring(c.id))
            seen[c.id] = true
        end
        t.truthy(descending(l) and #l == math.min(len, #l) and #l >= math.min(len, 10))
    end
    r = h.recommend({user = "me", n = 10, now = now + 20, exclude = {"B4", "B5"}})
    t.truthy(not has(r, "B4") and not has(r, "B5"), "exclude honoured")
    -- an item page: its neighbours lead
    r = h.recommend({user = "me", n = 5, now = now + 20, context = {item = "C2"}})
    t.truthy(count_cluster(r, "C", 3) >= 2, "context item C2 pulls C items up: " .. ids(r))
    t.truthy(not has(r, "C2"), "not the context item itself")
end)

t.test("hybrid + ease: in a session the newest items lead, a returning user's lasting taste", function()
    local db, pols, now = world({content = false})
    local h = strategy("hybrid", db)
    -- me: A1..A5 three days ago (the lasting taste), B1..B3 just now
    for i = 1, 5 do event(db, pols, "me", "A" .. i, "click", now - 3 * 86400 + i) end
    for i = 1, 3 do event(db, pols, "me", "B" .. i, "click", now - 600 + i) end
    local before = h.recommend({user = "me", n = 3, now = now + 2 * 86400})
    for _, c in ipairs(before) do t.truthy(c.why ~= "ease", "no model yet: no ease source") end
    local info = db:ease_train({lambda = 5})
    t.eq(info.users, 19)
    -- in the session (B clicks ten minutes ago): the session's cluster
    local r = h.recommend({user = "me", n = 3, now = now})
    t.eq(count_cluster(r, "B", 3), 3, "in session: " .. ids(r))
    -- two days later: EASE over the whole history leads, and A is most of it
    r = h.recommend({user = "me", n = 3, now = now + 2 * 86400})
    t.eq(r[1].why, "ease")
    t.truthy(count_cluster(r, "A", 3) >= 2, "returning: " .. ids(r))
    for _, c in ipairs(r) do
        t.truthy(c.id ~= "A1" and c.id ~= "A5" and c.id ~= "B1", "seen left out")
    end
end)

t.test("hybrid: the session weight falls continuously with the newest event's age", function()
    local h = strategy("hybrid", recd.open(t.tmpdir(), {no_sync = true}))
    local w = h.session_weight
    t.eq(w(0), 1.0)
    t.eq(w(-5), 1.0, "an event stamped after now is in the session")
    t.near(w(3600), 0.5, 1e-9)
    t.truthy(w(3599) - w(3601) < 1e-3, "no cliff at an hour: " .. w(3599) .. " vs " .. w(3601))
    local ages = {1, 60, 600, 1800, 3599, 3601, 7200, 86400, 30 * 86400}
    for i = 2, #ages do
        t.truthy(w(ages[i]) < w(ages[i - 1]), "falls from " .. ages[i - 1] .. " s to " .. ages[i] .. " s")
    end
    t.truthy(w(60) > 0.99, "a minute: in the session")
    t.truthy(w(86400) < 0.01, "a day: returning")
    t.eq(w(nil), 0.0, "no positive event: no session")
end)

t.test("hybrid + ease: the list moves little across an hour, and fully over days", function()
    local db, pols, now = world({content = false})
    local h = strategy("hybrid", db)
    for i = 1, 5 do event(db, pols, "me", "A" .. i, "click", now - 3 * 86400 + i) end
    for i = 1, 3 do event(db, pols, "me", "B" .. i, "click", now + i) end
    db:ease_train({lambda = 5})
    local last = now + 3
    local function scores(age)
        local out = {}
        for _, c in ipairs(h.recommend({user = "me", n = 20, now = last + age})) do out[c.id] = c.score end
        return out
    end
    local function diff(a, b)
        local d = 0.0
        for id, x in pairs(a) do d = math.max(d, math.abs(x - (b[id] or 0.0))) end
        for id, y in pairs(b) do d = math.max(d, math.abs(y - (a[id] or 0.0))) end
        return d
    end
    local before, after = scores(3599), scores(3601)
    t.truthy(diff(before, after) < 0.01, "3599 s and 3601 s: scores move by " .. diff(before, after))
    -- the same list order on both sides of the hour, but for neighbours
    -- closer than the random walks' noise (each request walks afresh)
    local a, b = h.recommend({user = "me", n = 10, now = last + 3599}), h.recommend({user = "me", n = 10, now = last + 3601})
    t.eq(#a, #b)
    local i = 1
    while i <= #a do
        if a[i].id ~= b[i].id then
            t.truthy(a[i + 1] and a[i].id == b[i + 1].id and a[i + 1].id == b[i].id and
                     math.abs(a[i].score - a[i + 1].score) < 0.01, "order at " .. i .. ": " .. ids(a) .. " vs " .. ids(b))
            i = i + 1
        end
        i = i + 1
    end
    -- the blend is real: a minute and two days apart, the lists differ
    local early, late = scores(60), scores(2 * 86400)
    t.truthy(diff(early, late) > 0.1, "a minute against two days: " .. diff(early, late))
    -- and B (the session) loses ground to A (the lasting taste) step by step
    local prev
    for _, age in ipairs({60, 1800, 3600, 7200, 86400}) do
        local r = h.recommend({user = "me", n = 6, now = last + age})
        local b_share = count_cluster(r, "B", 6)
        t.truthy(prev == nil or b_share <= prev, "B's share at " .. age .. " s: " .. ids(r))
        prev = b_share
    end
    t.truthy(count_cluster(h.recommend({user = "me", n = 3, now = last + 60}), "B", 3) == 3)
    t.truthy(count_cluster(h.recommend({user = "me", n = 3, now = last + 86400}), "A", 3) >= 2)
end)

t.test("hybrid: events faster than a person engages tell nothing of a session", function()
    local h = strategy("hybrid", recd.open(t.tmpdir(), {no_sync = true}))
    local w = h.session_weight
    t.eq(w(0, 0), 0.0, "one time for every event: no session")
    t.near(w(0, 0.5), 0.5, 1e-9)
    t.eq(w(0, 1.0), 1.0)
    t.eq(w(0, 30), 1.0, "a person's pace")
    t.truthy(w(0, 0.999) - w(0, 1.001) < 1e-2, "no cliff at the minimum gap")
    t.near(w(3600, 0.5), 0.25, 1e-9, "age and pace both count")
end)

t.test("hybrid + ease: a history on one clock that does not tick is served as lasting taste", function()
    local db, pols, now = world({content = false})
    local h = strategy("hybrid", db)
    -- A1..A5 then B1..B3, every event at the same time: the order is
    -- arrival order, and no event is any older than another
    for i = 1, 5 do event(db, pols, "me", "A" .. i, "click", now) end
    for i = 1, 3 do event(db, pols, "me", "B" .. i, "click", now) end
    db:ease_train({lambda = 5})
    local at_once = h.recommend({user = "me", n = 3, now = now})
    t.eq(at_once[1].why, "ease")
    t.truthy(count_cluster(at_once, "A", 3) >= 2, "lasting taste: " .. ids(at_once))
    local function set(r)
        local l = {}
        for i, c in ipairs(r) do l[i] = tostring(c.id) end
        table.sort(l)
        return table.concat(l, ",")
    end
    t.eq(set(at_once), set(h.recommend({user = "me", n = 3, now = now + 2 * 86400})),
         "the same items as coming back two days later")
    -- the same history a second apart each is a session: B leads
    for i = 1, 5 do event(db, pols, "you", "A" .. i, "click", now + i) end
    for i = 1, 3 do event(db, pols, "you", "B" .. i, "click", now + 5 + i) end
    local r = h.recommend({user = "you", n = 3, now = now + 8})
    t.eq(count_cluster(r, "B", 3), 3, "in session: " .. ids(r))
end)

t.test("no strategy returns seen, excluded or inactive items", function()
    local db, pols, now = world()
    for i = 1, 3 do event(db, pols, "me", "A" .. i, "click", now + i) end
    event(db, pols, "me", "B1", "dislike", now + 4)
    db:item_put("A5", nil, nil, false)
    for _, name in ipairs(STRATEGIES) do
        local s = strategy(name, db)
        for _, user in ipairs({"me", "bgA1", "bgB3", "brand-new"}) do
            local hist = {}
            for _, e in ipairs(db:history(user)) do hist[e.item] = true end
            local req = {user = user, n = 15, now = now + 10, exclude = {"A4", "C2"},
                         context = {item = "A6"}, rec = db}
            local r = s.recommend(req)
            t.truthy(#r <= 15, name .. " respects n")
            local dup = {}
            for _, c in ipairs(r) do
                t.truthy(not hist[c.id], name .. " returned seen " .. tostring(c.id) .. " to " .. user)
                t.truthy(c.id ~= "A4" and c.id ~= "C2", name .. " returned an excluded item")
                t.truthy(c.id ~= "A5", name .. " returned an inactive item")
                t.truthy(type(c.score) == "number", name .. " scores are numbers")
                t.truthy(not dup[c.id], name .. " returned " .. tostring(c.id) .. " twice")
                dup[c.id] = true
            end
        end
    end
end)

t.test("a long history is left out whole, beyond what scripts read of it", function()
    local db, pols, now = world()
    local old = {}
    db:batch(function()
        -- old engagement with most of A and B, then 150 newer events on C1, C2
        for i = 1, 8 do
            event(db, pols, "heavy", "A" .. i, "click", now - 5000 + i)
            old[#old + 1] = "A" .. i
        end
        for i = 1, 4 do
            event(db, pols, "heavy", "B" .. i, i % 2 == 0 and "skip" or "view", now - 4000 + i)
            old[#old + 1] = "B" .. i
        end
        for k = 1, 150 do event(db, pols, "heavy", "C" .. (k % 2 + 1), "view", now - 3000 + k) end
    end)
    local seen = {C1 = true, C2 = true}
    for _, id in ipairs(old) do seen[id] = true end
    local function check(list, what)
        for _, c in ipairs(list) do
            t.truthy(not seen[c.id], what .. " returned seen " .. tostring(c.id))
        end
    end
    for _, name in ipairs(STRATEGIES) do
        local s = strategy(name, db)
        for _, ctx in ipairs({{}, {item = "A3"}}) do
            local r = s.recommend({user = "heavy", n = 20, now = now, context = ctx, rec = db})
            check(r, name)
        end
    end
    local r = strategy("hybrid", db).recommend({user = "heavy", n = 5, now = now, rec = db})
    t.eq(#r, 5, "hybrid still answers: " .. ids(r))
    -- policies given every item
    local all = {}
    for _, c in ipairs({"A", "B", "C"}) do
        for i = 1, 9 do all[#all + 1] = {id = c .. i, score = 100 - #all} end
    end
    local kept = policy("seen", db).rerank({user = "heavy", n = 10, rec = db}, all)
    t.eq(#kept, #all - 14, "seen drops all 14 seen items: " .. ids(kept))
    check(kept, "seen")
    local ex = policy("explore", db)
    math.randomseed(3)
    local explored = 0
    for _ = 1, 20 do
        -- seen items below the shown slots are never explored into them
        for _, c in ipairs(ex.rerank({user = "heavy", n = 10, now = now, rec = db}, all)) do
            if c.why == "explore" then
                explored = explored + 1
                t.truthy(not seen[c.id], "explore inserted seen " .. tostring(c.id))
            end
        end
    end
    t.truthy(explored > 0, "explore inserted unseen items")
    -- and with allow_seen the scripts may return them again
    local again = policy("seen", db).rerank({user = "heavy", n = 10, rec = db, allow_seen = true}, all)
    t.eq(#again, #all)
end)

t.test("integer ids work end to end", function()
    local db = recd.open(t.tmpdir(), {no_sync = true})
    local pols = {policy("counters", db), policy("online_mf", db), policy("fatigue", db)}
    local now = os.time()
    db:batch(function()
        for i = 1, 6 do db:item_put(i, nil, {content = near(i <= 3 and "A" or "B")}) end
        db:item_put("1", nil, {content = near("B")}) -- the string "1" is another item
        for u = 1, 4 do
            event(db, pols, u, 1, "click", now)
            event(db, pols, u, 2, "click", now + 1)
        end
        event(db, pols, 9, 4, "view", now)
    end)
    local r = strategy("popular", db).recommend({user = 1, n = 10, now = now + 2})
    t.eq(ids(r), "4", "integer user 1 has seen items 1 and 2")
    t.eq(math.type(r[1].id), "integer")
    r = strategy("hybrid", db).recommend({user = 3, n = 3, now = now + 2})
    t.truthy(#r > 0 and not has(r, 1) and not has(r, 2), "hybrid: " .. ids(r))
    t.truthy(has(r, 3), "content taste: item 3 sits in cluster A with 1 and 2")
    r = strategy("similar", db).recommend({user = "x", n = 2, now = now, context = {item = 1}})
    t.truthy(has(r, 2) and has(r, 3), "similar to integer item 1: " .. ids(r))
    t.truthy(not has(r, "1"))
    local f = pols[3]
    local items = {{id = 1, score = 2}, {id = "1", score = 1}}
    for _ = 1, 3 do db:mark_shown(5, {1}) end
    local out = f.rerank({user = 5, n = 1, now = now, rec = db}, items)
    t.eq(out[1].id, "1", "integer item 1 is tired, the string item \"1\" is not")
    t.eq(out[2].id, 1)
end)

t.test("online_mf: positive events move the user's vector, negative ones do not", function()
    local db = recd.open(t.tmpdir(), {no_sync = true, seed = 3})
    local mf = policy("online_mf", db)
    local pols = {mf}
    for i = 1, 10 do db:item_put("i" .. i) end
    event(db, pols, "u", "i1", "click")
    local sp = db:space("mf")
    t.truthy(sp, "space created")
    t.eq(sp.dim, 64)
    event(db, pols, "u", "i2", "click")
    local v0 = db:vector("user", "u", "mf")
    t.truthy(v0, "the user has a vector")
    event(db, pols, "u", "i3", "purchase")
    local v1 = db:vector("user", "u", "mf")
    local moved = 0
    for d = 1, 64 do moved = moved + math.abs(v1[d] - v0[d]) end
    t.truthy(moved > 0, "a purchase moved the vector")
    -- towards the item: the score of i3 went up
    local function dot(a, b) local s = 0 for d = 1, #a do s = s + a[d] * b[d] end return s end
    event(db, pols, "u", "i4", "skip")
    event(db, pols, "u", "i5", "dislike")
    local v2 = db:vector("user", "u", "mf")
    for d = 1, 64 do t.eq(v2[d], v1[d], "negative feedback makes no step") end
    local before = dot(db:vector("user", "u", "mf"), db:vector("item", "i6", "mf") or v2)
    for _ = 1, 30 do learn(db, {mf}, {{user = "u", item = "i6", weight = 2, type = "click", ts = os.time()}}) end
    local after = dot(db:vector("user", "u", "mf"), db:vector("item", "i6", "mf"))
    t.truthy(after > before, "repeated steps raise the item's score")
end)

t.test("cooccur: nothing to do per event; the engine keeps the graph", function()
    local db = recd.open(t.tmpdir(), {no_sync = true})
    local c = policy("cooccur", db)
    t.eq(c.on_event, nil, "no per-event work")
    t.eq(c.on_events, nil)
    t.eq(c.rerank, nil)
    local pols = {c}
    event(db, pols, "u", "a", "click")
    event(db, pols, "u", "b", "view")
    event(db, pols, "u", "c", "skip")
    t.eq(db:cooc("a", "b"), 1, "min(2, 1)")
    t.eq(db:cooc("a", "c"), 0, "negative feedback makes no edge")
    t.eq(ids(db:neighbors("a")), "b")
end)

t.test("counters: families created with their half-lives, fed by positive events", function()
    local db = recd.open(t.tmpdir(), {no_sync = true})
    local c = policy("counters", db)
    t.eq(db:counter("popularity").half_life, 30 * 86400)
    t.eq(db:counter("trend_short").half_life, 3600)
    t.eq(db:counter("trend_long").half_life, 86400)
    t.eq(db:counter("clicks").half_life, db:counter("impressions").half_life,
         "clicks and impressions decay alike")
    local ts = 1000000
    event(db, {c}, "u", "a", "purchase", ts)
    event(db, {c}, "u", "a", "click", ts)
    event(db, {c}, "u", "b", "skip", ts)
    t.near(db:counter_get("popularity", "a", ts), 10)
    t.near(db:counter_get("trend_short", "a", ts), 10)
    t.near(db:counter_get("trend_long", "a", ts), 10)
    t.near(db:counter_get("clicks", "a", ts), 2, nil, "clicks count engagements")
    t.near(db:counter_get("trend_short", "a", ts + 3600), 5, nil, "short half-life")
    t.near(db:counter_get("popularity", "a", ts + 30 * 86400), 5, nil, "long half-life")
    t.eq(db:counter_get("popularity", "b", ts), 0, "negative feedback adds nothing")
    t.eq(db:counter_get("clicks", "b", ts), 0)
    t.eq(db:counter_get("impressions", "a", ts), 0, "impressions are the server's")
    -- a reload keeps the counts: on_load again changes nothing
    policy("counters", db)
    t.near(db:counter_get("popularity", "a", ts), 10)
end)

t.test("explore: Beta sampler is sound", function()
    local db = recd.open(t.tmpdir(), {no_sync = true})
    local ex = policy("explore", db)
    math.randomseed(11)
    for _, ab in ipairs({{2, 8}, {0.5, 0.5}, {30, 10}, {1, 1}}) do
        local a, b = ab[1], ab[2]
        local sum, sq, N = 0, 0, 4000
        for _ = 1, N do
            local x = ex.beta(a, b)
            t.truthy(x >= 0 and x <= 1, "in [0, 1]")
            sum = sum + x
            sq = sq + x * x
        end
        local mean, var = sum / N, sq / N - (sum / N) ^ 2
        local m0 = a / (a + b)
        local v0 = a * b / ((a + b) ^ 2 * (a + b + 1))
        t.near(mean, m0, 0.05, "mean of Beta(" .. a .. "," .. b .. ")")
        t.truthy(math.abs(var - v0) < 0.2 * v0 + 0.002, "variance of Beta(" .. a .. "," .. b .. ")")
    end
end)

t.test("explore: a short list is filled from the catalogue, clicked items first", function()
    local db, pols, now = world()
    local ex = policy("explore", db)
    db:batch(function()
        for i = 1, 40 do db:item_put("N" .. i, nil, {content = near("A")}) end
        db:item_put("gone", nil, nil, false)
    end)
    -- a new user, nothing from the strategies: a full list of distinct,
    -- active, not excluded items, marked
    local out = ex.rerank({user = "newcomer", n = 10, now = now, exclude = {"N1"}, rec = db}, {})
    t.eq(#out, 10, "filled")
    local seen = {}
    for _, it in ipairs(out) do
        t.eq(it.why, "explore")
        t.truthy(not seen[it.id], "distinct: " .. tostring(it.id))
        t.truthy(it.id ~= "N1" and it.id ~= "gone", "left out: " .. tostring(it.id))
        seen[it.id] = true
    end
    -- a short list keeps its items first and is completed below them
    out = ex.rerank({user = "newcomer", n = 10, now = now, rec = db},
                    {{id = "N2", score = 5}, {id = "N3", score = 4}})
    t.eq(#out, 10)
    t.eq(out[1].id, "N2")
    t.eq(out[2].id, "N3")
    t.truthy(out[3].score < 4, "filled below")
    -- an item that earns clicks where it is shown is drawn first more often
    db:batch(function()
        db:counter_add("impressions", "N7", 50, now)
        db:counter_add("clicks", "N7", 25, now)
    end)
    math.randomseed(5)
    local first = 0
    for _ = 1, 20 do
        out = ex.rerank({user = "newcomer", n = 5, now = now, rec = db}, {})
        if out[1].id == "N7" then first = first + 1 end
    end
    t.truthy(first >= 15, "the clicked item leads (" .. first .. "/20)")
    -- previews are filled too (a list a new user would see), but a full
    -- list is left as it is
    out = ex.rerank({user = "newcomer", n = 3, now = now, rec = db, record = false}, {})
    t.eq(#out, 3)
end)

t.test("db:sample draws distinct items the options leave in", function()
    local db = world()
    local got = db:sample(5, {exclude = {"A1"}, seen_by = nil})
    t.eq(#got, 5)
    local seen = {}
    for _, h in ipairs(got) do
        t.truthy(not seen[h.id] and h.id ~= "A1", "distinct, not excluded")
        seen[h.id] = true
    end
    t.eq(#db:sample(0), 0)
    local all = db:sample(1000)
    t.truthy(#all > 5 and #all <= db:stats().items, "at most the catalogue: " .. #all)
end)

t.test("explore: a bounded share of low slots goes to unproven items, marked", function()
    local db, pols, now = world()
    local ex = policy("explore", db)
    -- new A items beside A9; every old item is proven (and poor)
    db:batch(function()
        for i = 10, 12 do db:item_put("A" .. i, nil, {content = near("A")}) end
        for _, c in ipairs({"A", "B", "C"}) do
            for i = 1, 8 do db:counter_add("impressions", c .. i, 1000, now) end
        end
    end)
    event(db, pols, "me", "A12", "view", now)
    local function list()
        local items = {}
        for i = 1, 8 do items[i] = {id = "A" .. i, score = 10 - i} end
        items[9] = {id = "B1", score = 1.5}
        items[10] = {id = "B2", score = 1.0}
        return items
    end
    math.randomseed(99)
    local inserted, runs = 0, 40
    for _ = 1, runs do
        local out = ex.rerank({user = "me", n = 10, now = now, exclude = {"A11"}, rec = db}, list())
        t.eq(#out, 10, "length kept")
        local k = 0
        for i, it in ipairs(out) do
            if it.why == "explore" then
                k = k + 1
                t.truthy(i >= 9, "only the lowest slots: " .. i)
                t.truthy(it.id == "A9" or it.id == "A10" or it.id == "B9" or it.id == "C9",
                         "an unproven item: " .. tostring(it.id))
                t.truthy(type(it.score) == "number")
            end
            t.truthy(it.id ~= "A11", "excluded item never inserted")
            t.truthy(it.id ~= "A12", "seen item never inserted")
        end
        t.truthy(k <= 2, "at most 2 slots (20% of 10)")
        t.eq(out[1].id, "A1", "the top is untouched")
        inserted = inserted + k
    end
    t.truthy(inserted >= runs, "proven-poor slots lose to new items (" .. inserted .. ")")
    -- small lists: 20% of 4 is no slot
    local four = {{id = "A1", score = 4}, {id = "A2", score = 3}, {id = "A3", score = 2},
                  {id = "A4", score = 1}}
    t.eq(ids(ex.rerank({user = "me", n = 4, now = now, rec = db}, four)), "A1,A2,A3,A4")
    -- proven-good incumbents rarely give way
    db:batch(function()
        for i = 1, 8 do db:counter_add("clicks", "A" .. i, 600, now) end
        db:counter_add("clicks", "B1", 600, now)
        db:counter_add("clicks", "B2", 600, now)
    end)
    local good = 0
    for _ = 1, runs do
        for _, it in ipairs(ex.rerank({user = "me", n = 10, now = now, rec = db}, list())) do
            if it.why == "explore" then good = good + 1 end
        end
    end
    t.truthy(good <= 3, "strong incumbents keep their slots (" .. good .. " explored)")
end)

t.test("fatigue: every showing discounts, the top slot most; an engagement resets", function()
    local db = recd.open(t.tmpdir(), {no_sync = true})
    local f = policy("fatigue", db)
    db:batch(function()
        for _, id in ipairs({"a", "b", "c", "d", "e"}) do db:item_put(id, {}) end
    end)
    local function list()
        return {{id = "a", score = 5}, {id = "b", score = 4}, {id = "c", score = 3},
                {id = "d", score = 2}, {id = "e", score = 1}}
    end
    local function req(user) return {user = user or "u", n = 3, rec = db} end
    t.eq(ids(f.rerank(req(), list())), "a,b,c,d,e", "nothing shown yet")
    db:mark_shown("u", {"a", "b", "c"})
    local out = f.rerank(req(), list())
    -- a: 5 x 0.5^1 = 2.5, b: 4 x 0.5^0.63 = 2.58, c: 3 x 0.5^0.5 = 2.12
    t.eq(ids(out), "b,a,c,d,e", "one showing each: the top slot costs most")
    t.near(out[1].fatigue, 1 / math.log(3, 2), 1e-5)
    db:mark_shown("u", {"a", "b", "c"})
    t.eq(ids(f.rerank(req(), list())), "d,b,c,a,e", "two showings: d passes all three")
    -- an engagement clears the item; another person is not tired
    db:event{user = "u", item = "a", type = "click"}
    t.eq(ids(f.rerank(req(), list())), "a,d,b,c,e")
    t.eq(ids(f.rerank(req("other"), list())), "a,b,c,d,e")
    -- negative scores go down too
    db:mark_shown("n", {"a"})
    local neg = f.rerank(req("n"), {{id = "a", score = -1}, {id = "b", score = -1.5}})
    t.eq(ids(neg), "b,a")
    -- forgotten with the person
    db:user_delete("u")
    t.eq(ids(f.rerank(req(), list())), "a,b,c,d,e")
end)

t.test("click: declares its model; keeps the order and fills before it learned; values conversions", function()
    local db = recd.open(t.tmpdir(), {no_sync = true})
    local c = policy("click", db)
    t.truthy(type(c.model) == "table" and #c.model.features > 0, "a model is declared")
    db:batch(function()
        for i = 1, 30 do db:item_put("k" .. i, {category = "c" .. (i % 3)}) end
    end)
    -- no model in force (no server syncs the declaration): the strategies' order, filled
    local out = c.rerank({user = "u", n = 5, rec = db}, {{id = "k2", score = 2}, {id = "k1", score = 1}})
    t.eq(#out, 5)
    t.eq(out[1].id, "k2")
    t.eq(out[2].id, "k1")
    -- in force but nothing learned yet: the same
    db:click_model(c.model)
    out = c.rerank({user = "u", n = 3, rec = db}, {{id = "k3", score = 3}, {id = "k4", score = 2},
                                                   {id = "k5", score = 1}})
    t.eq(ids(out), "k3,k4,k5")
    -- conversions with a value: the item's sums and the mean of all
    -- (one batch, as the server hands them over)
    local evs = {
        {user = "u", item = "k3", type = "purchase", value = 30, ts = 1000},
        {user = "u", item = "k4", type = "purchase", value = 10, ts = 1000},
        {user = "u", item = "k4", type = "click", value = 99, ts = 1000},
        {user = "u", item = "k5", type = "purchase", ts = 1000},
    }
    for _, ev in ipairs(evs) do ev.seq, ev.weight = db:event(ev) end
    learn(db, {c}, evs)
    t.near(db:counter_get("click_conv_value", "k3", 1000), 30, 1e-9)
    t.near(db:counter_get("click_conv_count", "k4", 1000), 1, 1e-9)
    t.near(db:counter_get("click_conv_value", "k5", 1000), 0, 1e-9)
    t.eq(db:kv_get("click:conv_mean").n, 2)
    t.near(db:kv_get("click:conv_mean").sum, 40, 1e-9)
end)

t.test("seen: drops history and excluded items unless allowed", function()
    local db = recd.open(t.tmpdir(), {no_sync = true})
    local s = policy("seen", db)
    db:event{user = "u", item = "a", type = "view"}
    db:event{user = "u", item = "c", type = "skip"}
    local items = {{id = "a", score = 4}, {id = "b", score = 3}, {id = "c", score = 2},
                   {id = "d", score = 1}}
    t.eq(ids(s.rerank({user = "u", n = 4, rec = db}, items)), "b,d")
    t.eq(ids(s.rerank({user = "u", n = 4, rec = db, exclude = {"d"}}, items)), "b")
    t.eq(ids(s.rerank({user = "u", n = 4, rec = db, allow_seen = true}, items)), "a,b,c,d")
    t.eq(ids(s.rerank({user = "u", n = 4, rec = db, allow_seen = true, exclude = {"b"}}, items)),
         "a,c,d", "exclude still applies")
    t.eq(ids(s.rerank({user = "new", n = 4, rec = db}, items)), "a,b,c,d")
end)

t.test("diversity: MMR spreads the top over clusters", function()
    local db = world({policies = {}})
    local dv = policy("diversity", db)
    local items = {{id = "A1", score = 1.0}, {id = "A2", score = 0.99}, {id = "A3", score = 0.98},
                   {id = "A4", score = 0.97}, {id = "A5", score = 0.96}, {id = "B1", score = 0.9},
                   {id = "C1", score = 0.88}}
    local out = dv.rerank({user = "u", n = 7, rec = db}, items)
    t.eq(#out, 7)
    t.eq(out[1].id, "A1", "the most relevant stays first")
    local top3 = {cluster(out[1].id), cluster(out[2].id), cluster(out[3].id)}
    table.sort(top3)
    t.eq(table.concat(top3), "ABC", "one of each cluster on top: " .. ids(out))
    -- a clearly more relevant near-duplicate still wins
    local strong = {{id = "A1", score = 1.0}, {id = "A2", score = 0.99}, {id = "B1", score = 0.2},
                    {id = "C1", score = 0.1}}
    t.eq(ids(dv.rerank({user = "u", n = 4, rec = db}, strong)), "A1,A2,B1,C1")
    -- no content space: unchanged
    local bare = recd.open(t.tmpdir(), {no_sync = true})
    local dv2 = policy("diversity", bare)
    t.eq(ids(dv2.rerank({user = "u", n = 7, rec = bare}, items)), ids(items))
end)

t.test("rules: category and price filters from the context", function()
    local db = recd.open(t.tmpdir(), {no_sync = true})
    local r = policy("rules", db)
    db:batch(function()
        db:item_put("r1", {category = "comedy", price = 10})
        db:item_put("r2", {genres = {"Drama", "Comedy"}, price = 30})
        db:item_put("r3", {category = "drama", price = 5})
        db:item_put("r4", {title = "no category, no price"})
        db:item_put("r5", {category = "Comedy", price = 15}, nil, false)
        db:item_put("r6", {category = {"kids", "comedy"}, price = "free"})
        db:item_put("r7", {genre = "COMEDY", price = 12})
    end)
    local items = {}
    for i = 1, 7 do items[i] = {id = "r" .. i, score = 8 - i} end
    local function run(ctx) return ids(r.rerank({user = "u", n = 6, rec = db, context = ctx}, items)) end
    t.eq(run(nil), "r1,r2,r3,r4,r5,r6,r7", "no context: untouched")
    t.eq(run({page = "home"}), "r1,r2,r3,r4,r5,r6,r7", "no rule: untouched")
    t.eq(run({category = "comedy"}), "r1,r2,r4,r5,r6,r7", "category, genre or genres, any case")
    t.eq(run({category = {"drama", "kids"}}), "r2,r3,r4,r6", "any of a list")
    t.eq(run({category = "comedy", strict = true}), "r1,r2,r5,r6,r7", "strict: no category fails")
    t.eq(run({exclude_category = "drama"}), "r1,r4,r5,r6,r7")
    t.eq(run({max_price = 12}), "r1,r3,r4,r6,r7", "no numeric price passes")
    t.eq(run({min_price = 12, max_price = 30}), "r2,r4,r5,r6,r7")
    t.eq(run({min_price = 12, max_price = 30, strict = true}), "r2,r5,r7")
    t.eq(run({category = "comedy", max_price = 20}), "r1,r4,r5,r6,r7")
    t.eq(run({category = "comedy", max_price = 20, only_active = true}), "r1,r4,r6,r7")
    t.eq(run({only_active = true}), "r1,r2,r3,r4,r6,r7")
end)

t.test("a reload loses nothing: state lives in the engine", function()
    local dir = t.tmpdir()
    local db = recd.open(dir, {no_sync = true})
    local now = os.time()
    local pols = {policy("counters", db), policy("online_mf", db)}
    for k = 1, 3 do event(db, pols, "u" .. k, "x", "click", now) end
    event(db, pols, "u1", "y", "click", now)
    local v = db:vector("user", "u1", "mf")
    db:close()
    db = recd.open(dir, {no_sync = true})
    -- fresh copies of the files, as after a hot reload or a restart
    policy("counters", db)
    t.eq(strategy("popular", db).recommend({user = "new", n = 1, now = now})[1].id, "x")
    local v2 = db:vector("user", "u1", "mf")
    for d = 1, #v do t.eq(v2[d], v[d]) end
end)

t.done()
