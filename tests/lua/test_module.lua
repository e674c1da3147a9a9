-- The recd Lua module against a real LMDB folder.
local t = require "harness"
local recd = require "recd"

local function ids(hits)
    local out = {}
    for i, h in ipairs(hits) do out[i] = h.id end
    return table.concat(out, ",")
end

t.test("open creates the folder and an empty engine", function()
    local dir = t.tmpdir() .. "/fresh/data"
    local db = recd.open(dir)
    local st = db:stats()
    t.eq(st.items, 0, "items")
    t.eq(st.users, 0, "users")
    t.eq(st.events, 0, "events")
    t.truthy(st.isa == "avx512" or st.isa == "avx2" or st.isa == "scalar", "isa")
    db:close()
    t.raises("invalid_params", function() return db:stats() end)
end)

t.test("items: put, get, table form, integer ids distinct from strings", function()
    local db = recd.open(t.tmpdir())
    t.truthy(db:item_put("m1", {title = "Heat", genres = {"action", "crime"}, year = 1995}))
    db:item_put{id = 42, props = {title = "int"}}
    db:item_put("42", {title = "string"})
    local m = db:item_get("m1")
    t.eq(m.id, "m1")
    t.eq(m.props.title, "Heat")
    t.eq(m.props.genres[2], "crime")
    t.eq(m.props.year, 1995)
    t.eq(m.active, true)
    t.eq(db:item_get(42).props.title, "int")
    t.eq(db:item_get("42").props.title, "string")
    t.eq(db:item_get("nope"), nil, "unknown item is nil")
    -- props kept when only the flag changes
    db:item_put("m1", nil, nil, false)
    m = db:item_get("m1")
    t.eq(m.active, false)
    t.eq(m.props.title, "Heat")
    t.eq(db:stats().items, 3)
end)

t.test("bad input: clear errors, nothing stored", function()
    local db = recd.open(t.tmpdir())
    t.raises("invalid_params", db.item_put, db, {})
    t.raises("invalid_params", db.item_put, db, 1.5)
    t.raises("invalid_params", db.item_put, db, "")
    t.raises("too_large", db.item_put, db, string.rep("x", 300))
    t.raises("invalid_params", db.item_put, db, "a", "not a table")
    t.raises("invalid_params", db.item_put, db, "a", {f = function() end})
    t.raises("invalid_params", db.item_put, db, "a", nil, {content = {1, "x"}})
    t.raises("non_finite", db.item_put, db, "a", nil, {content = {1, 0 / 0}})
    t.raises("non_finite", db.item_put, db, "a", nil, {content = {1, math.huge}})
    t.raises("invalid_params", db.item_put, db, "a", nil, {content = {}})
    t.raises("invalid_params", db.item_put, db, "a", nil, {content = string.rep("\0", 4097 * 4)})
    t.raises("invalid_params", db.item_put, db, "a", nil, nil, "yes")
    t.eq(db:stats().items, 0, "nothing stored by refused puts")
    db:item_put("a", nil, {content = {1, 0, 0}})
    local err = t.raises("dimension_mismatch", db.item_put, db, "b", {x = 1}, {content = {1, 0}})
    t.truthy(err.message:find("content"), "message names the space")
    t.eq(db:item_get("b"), nil, "refused put stores nothing")
    t.raises("not_found", db.similar, db, "zzz")
    t.raises("out_of_range", db.similar, db, "a", -1)
    t.raises("not_found", db.topk, db, "nospace", {1, 2, 3})
    t.raises("dimension_mismatch", db.topk, db, "content", {1, 2})
    t.raises("invalid_params", db.event, db, {item = "a", type = "click"})
    t.raises("invalid_params", db.event, db, {user = "u", item = "a"})
    t.raises("invalid_params", db.event, db, {user = {}, item = "a", type = "click"})
    t.raises("out_of_range", db.event, db, {user = "u", item = "a", type = "click", ts = -5})
    t.raises("not_found", db.counter_add, db, "nope", "a")
    t.raises("invalid_params", db.vector, db, "thing", "a", "content")
    t.eq(db:stats().events, 0)
end)

t.test("event batches: made from stored events, the learning primitives loop over them", function()
    local db = recd.open(t.tmpdir(), {no_sync = true})
    db:counter("c", 0)
    local evs = {}
    for i, e in ipairs{{"u1", "a", "click"}, {"u1", "b", "skip"}, {"u2", "a", "purchase"}} do
        local seq, w = db:event{user = e[1], item = e[2], type = e[3], ts = 1000 + i}
        evs[i] = {user = e[1], item = e[2], type = e[3], weight = w, ts = 1000 + i, seq = seq}
    end
    evs[3].value = 12.5
    local b = db:event_batch(evs)
    t.eq(#b, 3)
    t.eq(b[2].type, "skip")
    t.eq(b[2].weight, -1.0)
    t.eq(b[3].value, 12.5)
    t.eq(b[4], nil)
    t.eq(b[1], b[1], "one table per event")
    t.eq(#b:list{positive = true}, 2)
    t.eq(#b:list{value = true}, 1)
    t.eq(#b:list{types = {"no_such_type"}}, 0)
    -- positive events only, each at its weight and time
    t.eq(db:counter_add("c", b), 2)
    t.near(db:counter_get("c", "a", 2000), 10, 1e-9)
    t.near(db:counter_get("c", "b", 2000), 0, 1e-9)
    t.eq(db:counter_add("c", b, {positive = false, amount = 1}), 3)
    t.near(db:counter_get("c", "b", 2000), 1, 1e-9)
    t.eq(db:counter_add("c", b, {types = {"purchase"}, amount = 2}), 1)
    t.near(db:counter_get("c", "a", 2000), 14, 1e-9)
    -- mf: a weight function may skip an event
    local steps = db:mf_update(b, {dim = 4, weight = function(w, typ)
        if typ == "purchase" then return nil end
        return w
    end})
    t.eq(steps, 1)
    t.truthy(db:vector("user", "u1", "mf"), "stepped")
    t.eq(db:vector("user", "u2", "mf"), nil, "skipped")
    t.eq(db:ials_fold_in(b), false, "no model trained here")
    -- mf: weight = "log" and max_weight step as the same function in Lua does
    local function learned(weight)
        local d2 = recd.open(t.tmpdir(), {no_sync = true})
        local ev2 = {}
        for i, e in ipairs{{"u1", "a", "click"}, {"u2", "b", "view"}, {"u2", "a", "purchase"}} do
            local seq, w = d2:event{user = e[1], item = e[2], type = e[3], ts = 1000 + i}
            ev2[i] = {user = e[1], item = e[2], type = e[3], weight = w, ts = 1000 + i, seq = seq}
        end
        t.eq(d2:mf_update(d2:event_batch(ev2), {dim = 4, weight = weight, max_weight = 5}), 3)
        local v = d2:vector("user", "u2", "mf")
        d2:close()
        return v
    end
    local in_c = learned("log")
    local in_lua = learned(function(w) return w > 1 and 1 + math.log(w) or w end)
    for k = 1, 4 do t.near(in_c[k], in_lua[k], 1e-5, "component " .. k) end
    local raw, apart = learned(nil), 0 -- a purchase (8) steps at 5, not 3.08
    for k = 1, 4 do apart = math.max(apart, math.abs(raw[k] - in_c[k])) end
    t.truthy(apart > 1e-4, "log weights step apart from raw ones")
    -- mf: a batch made by hand is stepped at once (a server's batches of
    -- logged events are owed while nobody reads the space: test_scripts.py)
    local d2 = recd.open(t.tmpdir(), {no_sync = true})
    local seq, w = d2:event{user = "u1", item = "a", type = "click", ts = 1001}
    local steps2, loss2 = d2:mf_update(d2:event_batch{{user = "u1", item = "a", type = "click",
                                                       weight = w, ts = 1001, seq = seq}},
                                       {weight = "log"})
    t.eq(steps2, 1)
    t.eq(d2:space("mf").mf_owed, 0)
    t.eq(d2:space("mf").users, 1)
    t.truthy(loss2 >= 0)
    d2:close()
    t.raises("invalid_params", db.mf_update, db, b, {weight = "sqrt"})
    t.raises("out_of_range", db.mf_update, db, b, {weight = "log", max_weight = 0})
    -- bad input
    t.raises("invalid_params", db.counter_add, db, "c", b, {amount = 0 / 0})
    t.raises("invalid_params", db.counter_add, db, "c", b, {types = "click"})
    t.raises("invalid_params", db.mf_update, db, b, {weight = function() return 1 / 0 end})
    t.raises("not_found", db.event_batch, db, {{user = "nobody", item = "a", type = "click"}})
    t.raises("not_found", db.event_batch, db, {{user = "u1", item = "zzz", type = "click"}})
    t.raises("invalid_params", db.event_batch, db, {{user = "u1", item = "a", type = "nope"}})
    t.raises("invalid_params", db.event_batch, db, {{user = "u1", item = "a", type = "click", ts = 0 / 0}})
    t.raises("invalid_params", db.event_batch, db, {"not a table"})
    t.eq(db:stats().events, 3, "a batch stores nothing")
end)

t.test("vectors: similar by cosine and dot, filters, k beyond catalogue", function()
    local db = recd.open(t.tmpdir())
    db:batch(function()
        db:item_put("x", nil, {content = {1, 0, 0}})
        db:item_put("x2", nil, {content = {0.9, 0.1, 0}})
        db:item_put("y", nil, {content = {0, 1, 0}})
        db:item_put("xy", nil, {content = {2, 2, 0}})
        db:item_put("z", nil, {content = {0, 0, 1}})
        db:item_put("bare", {title = "no vector"})
    end)
    local sp = db:space("content")
    t.eq(sp.dim, 3)
    t.eq(sp.items, 5)
    local hits = db:similar("x", 2)
    t.eq(ids(hits), "x2,xy")
    t.near(hits[1].score, 0.9 / math.sqrt(0.82), 1e-5, "cosine score")
    t.eq(ids(db:similar("x", 2, {metric = "dot"})), "xy,x2")
    t.eq(#db:similar("x", 100), 4, "k beyond catalogue returns every other item")
    t.eq(ids(db:similar("x", 2, {exclude = {"x2"}})), "xy,y")
    t.eq(ids(db:similar("x", 10, {filter = function(id) return id ~= "xy" end})), "x2,y,z")
    local bm = db:bitmap(function(id) return id == "z" or id == "y" end)
    t.eq(#bm, 2)
    t.truthy(bm:has("z"))
    t.eq(ids(db:similar("x", 10, {filter = bm})), "y,z")
    local empty = db:bitmap()                 -- no argument: an empty bitmap
    t.eq(#empty, 0)
    t.eq(#empty:set("x"):set("y"), 2)
    t.eq(ids(db:similar("x", 10, {filter = empty})), "y")
    db:item_put("x2", nil, nil, false)
    t.eq(ids(db:similar("x", 2)), "xy,y", "inactive items left out")
    t.eq(ids(db:similar("x", 1, {include_inactive = true})), "x2")
    t.eq(#db:similar("x", 0), 0)
    t.raises("not_found", db.similar, db, "bare")
    t.eq(ids(db:topk("content", {0, 0, 1}, 1)), "z")
    -- binary float32 form
    db:item_put("bin", nil, {content = string.pack("<fff", 0, 0, 2)})
    t.eq(ids(db:topk("content", string.pack("<fff", 0, 0, 1), 2, {metric = "dot"})), "bin,z")
    local v = db:vector("item", "bin", "content")
    t.near(v[3], 2)
end)

t.test("ties are broken by insertion order, deterministically", function()
    local db = recd.open(t.tmpdir())
    db:batch(function()
        db:item_put("q", nil, {s = {1, 0}})
        for i = 1, 20 do db:item_put("t" .. i, nil, {s = {1, 0}}) end
    end)
    local a = ids(db:similar("q", 5))
    t.eq(a, "t1,t2,t3,t4,t5")
    t.eq(ids(db:similar("q", 5)), a)
end)

t.test("events: users and items created, history newest first, weights", function()
    local db = recd.open(t.tmpdir())
    local s1, w1 = db:event{user = "u1", item = "m1", type = "view", ts = 1000}
    local s2, w2 = db:event{user = "u1", item = "m2", type = "purchase", ts = 1001,
                            value = 4.5, rec_id = "r-1", context = {page = "home"}}
    t.eq(s2, s1 + 1, "sequence grows")
    t.eq(w1, 1)
    t.eq(w2, 8)
    local _, wx = db:event{user = "u2", item = "m1", type = "hover", ts = 1002}
    t.eq(wx, 0, "unknown types weigh 0")
    t.eq(db:event_weight("hover", 0.5), 0.5)
    local _, wy = db:event{user = "u2", item = "m3", type = "hover", ts = 1003}
    t.eq(wy, 0.5)
    local st = db:stats()
    t.eq(st.users, 2)
    t.eq(st.items, 3)
    t.eq(st.events, 4)
    local h = db:history("u1")
    t.eq(#h, 2)
    t.eq(h[1].item, "m2")
    t.eq(h[1].type, "purchase")
    t.eq(h[1].ts, 1001)
    t.eq(h[2].item, "m1")
    t.eq(#db:history("u1", 1), 1)
    t.eq(#db:history("nobody"), 0)
    local u = db:user_get("u1")
    t.eq(#u.history, 2)
    t.eq(db:item_get("m1").active, true, "items created by events are active")
end)

t.test("co-occurrence, neighbours and walks", function()
    local db = recd.open(t.tmpdir(), {window = 5})
    db:batch(function()
        for u = 1, 6 do
            db:event{user = "a" .. u, item = "A1", type = "click", ts = 10}
            db:event{user = "a" .. u, item = "A2", type = "click", ts = 11}
            if u <= 3 then db:event{user = "a" .. u, item = "A3", type = "view", ts = 12} end
        end
        for u = 1, 4 do
            db:event{user = "b" .. u, item = "B1", type = "click", ts = 10}
            db:event{user = "b" .. u, item = "B2", type = "view", ts = 11}
        end
        db:event{user = "a1", item = "B1", type = "skip", ts = 13}
    end)
    t.eq(db:cooc("A1", "A2"), 12, "6 users x min(2,2)")
    t.eq(db:cooc("A2", "A1"), 12, "symmetric")
    t.eq(db:cooc("A1", "A3"), 3, "3 users x min(2,1)")
    t.eq(db:cooc("A1", "B1"), 0, "negative feedback makes no edge")
    t.eq(ids(db:neighbors("A1", 5)), "A2,A3")
    local w = db:walk({"A1"}, {steps = 2000, k = 10})
    for _, h in ipairs(w) do t.truthy(h.id:sub(1, 1) == "A", "walk stays in its community: " .. h.id) end
    local wu = db:walk({user = "b1"}, {steps = 500})
    t.eq(#wu, 0, "b1 has seen every B item")
end)

t.test("online MF learns two tastes", function()
    local db = recd.open(t.tmpdir(), {no_sync = true, seed = 7})
    db:batch(function()
        for i = 1, 10 do db:item_put("a" .. i) ; db:item_put("b" .. i) end
        for u = 1, 10 do
            db:user_put("ua" .. u); db:user_put("ub" .. u)
        end
        local loss0
        for epoch = 1, 60 do
            for u = 1, 10 do
                for i = 1, 10 do
                    if (u + i) % 3 ~= 0 then
                        local l = db:mf_update("ua" .. u, "a" .. i, 1, {dim = 16, lr = 0.1})
                        db:mf_update("ub" .. u, "b" .. i, 1, {dim = 16, lr = 0.1})
                        if epoch == 1 and not loss0 then loss0 = l end
                    end
                end
            end
        end
    end)
    local sp = db:space("mf")
    t.eq(sp.dim, 16)
    local good = 0
    for u = 1, 10 do
        local top = db:recommend_vec("ua" .. u, 3, {exclude_seen = false})
        for _, h in ipairs(top) do if h.id:sub(1, 1) == "a" then good = good + 1 end end
    end
    t.truthy(good >= 27, "group-a users get group-a items (" .. good .. "/30)")
    t.raises("not_found", db.mf_update, db, "nobody", "a1")
    t.raises("invalid_params", db.mf_update, db, "ua1", "a1", -1)
end)

t.test("implicit ALS: training, fold-in, tastes separated", function()
    local db = recd.open(t.tmpdir(), {no_sync = true})
    -- 80 users in two groups, each clicking 4 of their group's 10 items
    local x = 7
    local function rnd(n) x = (x * 1103515245 + 12345) % 2147483648 return (x >> 16) % n end
    db:batch(function()
        for u = 1, 80 do
            local g = u % 2 == 0 and "a" or "b"
            for k = 1, 4 do
                db:event{user = "u" .. u, item = g .. rnd(10), type = "click", ts = 100 + k}
            end
        end
    end)
    t.eq(db:ials_fold_in("u1"), false, "no model trained yet")
    local r = db:ials_train{factors = 4, iters = 10, reg = 1.0}
    t.truthy(r.pairs > 200, "pairs " .. r.pairs)
    t.eq(db:space("ials").dim, 4)
    local good = 0
    for u = 1, 80 do
        local g = u % 2 == 0 and "a" or "b"
        local top = db:recommend_vec("u" .. u, 2, {space = "ials"})
        for _, h in ipairs(top) do if h.id:sub(1, 1) == g then good = good + 1 end end
    end
    t.truthy(good >= 152, "users get their group's unseen items (" .. good .. "/160)")
    -- a new user clicking group-b items is folded in at once
    db:event{user = "newcomer", item = "b3", type = "click", ts = 200}
    db:event{user = "newcomer", item = "b5", type = "click", ts = 201}
    local users_before = db:space("ials").users
    t.eq(db:ials_fold_in("newcomer"), true)
    -- a user whose first fold-in is owed counts in the space's users
    t.eq(db:space("ials").users, users_before + 1, "db:space folds the owed users in")
    db:event{user = "newcomer3", item = "a1", type = "click", ts = 201}
    t.eq(db:ials_fold_in("newcomer3"), true)
    local listed
    for _, sp in ipairs(db:spaces()) do if sp.name == "ials" then listed = sp end end
    t.eq(listed.users, users_before + 2, "db:spaces too")
    -- the fold-in is owed; reading the row pays it (read-your-writes)
    local v = db:vector("user", "newcomer", "ials")
    t.truthy(v ~= nil and #v == 4, "the owed fold-in is settled by the read")
    t.truthy(db:user_get("newcomer").vectors.ials ~= nil)
    local top = db:recommend_vec("newcomer", 3, {space = "ials"})
    for _, h in ipairs(top) do t.eq(h.id:sub(1, 1), "b", "folded-in user gets b items") end
    -- db:blend's "vec" source pays an owed fold-in before it reads the row
    db:event{user = "newcomer2", item = "b2", type = "click", ts = 202}
    db:event{user = "newcomer2", item = "b4", type = "click", ts = 203}
    t.eq(db:ials_fold_in("newcomer2"), true)
    local blended = db:blend({{"vec", user = "newcomer2", space = "ials"}}, 3, {seen_by = "newcomer2"})
    t.eq(#blended, 3, "the owed row is there for the blend")
    t.eq(ids(blended), ids(db:recommend_vec("newcomer2", 3, {space = "ials"})))
    t.raises("dimension_mismatch", db.ials_train, db, {factors = 16})
    t.truthy(db:stats().items == 20)
    t.raises("invalid_params", db.ials_train, db, {space = "other", factors = 0})

    -- EASE on the same two groups: nil before training, then group items
    t.eq(db:ease("u1", 3), nil, "no EASE model yet")
    local e = db:ease_train{lambda = 10, max_items = 20}
    t.eq(e.items, 20)
    t.eq(e.users, 83)
    local pick = db:ease("newcomer", 3)
    t.eq(#pick, 3)
    for _, h in ipairs(pick) do t.eq(h.id:sub(1, 1), "b", "EASE gives the newcomer b items") end
    t.eq(#db:ease("nobody", 3), 0, "an unknown user gets nothing")
    t.eq(#db:ease("newcomer", 3, {recent = 1, decay = 0.5}), 3)
    for _, bad in ipairs({{lambda = 0}, {lambda = -3}, {max_items = 0}, {max_items = 10 ^ 6},
                          {name = "no spaces"}}) do
        t.raises("invalid_params", db.ease_train, db, bad)
    end
    t.raises("invalid_params", db.ease, db, "newcomer", 3, {recent = -1})
    t.raises("invalid_params", db.ease, db, "newcomer", 3, {decay = 0})
    t.raises("invalid_params", db.ease, db, "newcomer", 3, {decay = 2})
    t.raises("out_of_range", db.ease, db, "newcomer", -1)
end)

t.test("recommend_vec leaves out what the user has seen", function()
    local db = recd.open(t.tmpdir())
    db:batch(function()
        db:item_put("i1", nil, {mf = {1, 0}})
        db:item_put("i2", nil, {mf = {0.9, 0}})
        db:item_put("i3", nil, {mf = {0, 1}})
        db:user_put("u", nil, {mf = {1, 0}})
        db:event{user = "u", item = "i1", type = "view", ts = 5}
    end)
    t.eq(ids(db:recommend_vec("u", 2)), "i2,i3")
    t.eq(ids(db:recommend_vec("u", 1, {exclude_seen = false})), "i1")
end)

-- Entries of a list as text: ids as they are, tables as "{id}".
local function entries(list)
    local out = {}
    for i, e in ipairs(list) do
        if type(e) == "table" then
            out[i] = "{" .. tostring(e.id) .. "}"
        else
            out[i] = math.type(e) == "integer" and "#" .. e or tostring(e)
        end
    end
    return table.concat(out, ",")
end

t.test("drop_seen: what the user has not interacted with, in order", function()
    local db = recd.open(t.tmpdir(), {no_sync = true})
    db:batch(function()
        db:item_put("never") -- an item nobody touched
        db:event{user = "u", item = "a", type = "view", ts = 10}
        db:event{user = "u", item = "c", type = "skip", ts = 11}    -- negative counts too
        db:event{user = "u", item = 7, type = "hover", ts = 12}     -- weight 0 too
        db:event{user = "u", item = "a", type = "click", ts = 13}   -- repeats
        db:event{user = 5, item = "b", type = "click", ts = 14}
        db:event{user = "other", item = "d", type = "click", ts = 15}
    end)
    local ta, tb = {id = "a", score = 3}, {id = "b", score = 2}
    local list = {"a", tb, "b", 7, "7", {id = 7}, "never", "unknown", ta, "c", {id = "d"}, 7.0}
    local out = db:drop_seen("u", list)
    t.eq(entries(out), "{b},b,7,never,unknown,{d}", "seen a, c and 7 dropped; order kept")
    t.truthy(out ~= list, "a new array")
    t.eq(#list, 12, "the list is left as it was")
    t.truthy(out[1] == tb, "table entries are the same tables")
    t.eq(math.type(out[3]), nil, "the string \"7\" is another item than 7")
    -- integer users, and strings that cannot be ids (never items, so kept)
    t.eq(entries(db:drop_seen(5, {"b", "a", "", string.rep("x", 300)})), "a,," .. string.rep("x", 300))
    t.eq(entries(db:drop_seen("5", {"b"})), "b", "the string user \"5\" is another user")
    -- unknown or nil user, empty list: a copy
    local copy = db:drop_seen("nobody", list)
    t.eq(#copy, #list)
    t.truthy(copy ~= list)
    for i = 1, #list do t.truthy(copy[i] == list[i], "copy entry " .. i) end
    t.eq(#db:drop_seen(nil, list), #list, "nil user")
    t.eq(#db:drop_seen("u", {}), 0)
    t.eq(entries(db:drop_seen("u", {"a", "a", "b", "b"})), "b,b", "duplicates each judged")
    -- a long history against a long list
    db:batch(function()
        for i = 1, 3000 do db:event{user = "heavy", item = "h" .. i, type = "view", ts = 100 + i} end
    end)
    local big = {}
    for i = 1, 2000 do big[i] = {id = "h" .. (i * 2), score = -i} end
    big[#big + 1] = "h9999"
    local kept = db:drop_seen("heavy", big)
    t.eq(#kept, 501, "h2..h3000 seen, h3002..h4000 and h9999 kept")
    t.eq(kept[1].id, "h3002")
    t.eq(kept[500].id, "h4000")
    t.eq(kept[501], "h9999")
    t.eq(#db:drop_seen("heavy", {"h1", "h3000", "h3001"}), 1, "oldest and newest events count")
    -- bad arguments
    local e = t.raises("invalid_params", db.drop_seen, db, "u", nil)
    t.truthy(e.message:find("list"), "names the list: " .. e.message)
    t.raises("invalid_params", db.drop_seen, db, "u", "a")
    t.raises("invalid_params", db.drop_seen, db, "u")
    e = t.raises("invalid_params", db.drop_seen, db, "u", {"a", 1.5})
    t.truthy(e.message:find("list%[2%]"), "names the entry: " .. e.message)
    t.raises("invalid_params", db.drop_seen, db, "u", {"a", true})
    e = t.raises("invalid_params", db.drop_seen, db, "u", {{id = "a"}, {score = 1}})
    t.truthy(e.message:find("list%[2%]%.id"), "names the field: " .. e.message)
    t.raises("invalid_params", db.drop_seen, db, "nobody", {{id = {}}}) -- checked without history too
    e = t.raises("invalid_params", db.drop_seen, db, {}, {"a"})
    t.truthy(e.message:find("user"), "names the user: " .. e.message)
    t.raises("invalid_params", db.drop_seen, db, 2.5, {"a"})
    t.raises("invalid_params", db.drop_seen, db, "", {"a"})
end)

t.test("seen_by leaves a user's whole history out of every query", function()
    local db = recd.open(t.tmpdir(), {no_sync = true})
    db:counter("pop", 0)
    db:batch(function()
        for i = 1, 6 do
            db:item_put("i" .. i, nil, {content = {1, i / 10}, mf = {1, i / 10}})
            db:counter_add("pop", "i" .. i, i)
        end
        db:user_put("u", nil, {mf = {1, 0}})
        for k = 1, 4 do
            db:event{user = "p" .. k, item = "i1", type = "click", ts = 10}
            db:event{user = "p" .. k, item = "i2", type = "click", ts = 11}
            db:event{user = "p" .. k, item = "i3", type = "click", ts = 12}
        end
        db:event{user = "u", item = "i2", type = "skip", ts = 20}
        db:event{user = "u", item = "i5", type = "click", ts = 21}
    end)
    local function no_seen(hits, what)
        t.truthy(#hits > 0, what .. " answered")
        for _, h in ipairs(hits) do
            t.truthy(h.id ~= "i2" and h.id ~= "i5", what .. " returned seen " .. h.id)
        end
    end
    local o = {seen_by = "u"}
    no_seen(db:similar("i1", 10, o), "similar")
    no_seen(db:topk("content", {1, 0.3}, 10, o), "topk")
    no_seen(db:recommend_vec("u", 10, {seen_by = "u", exclude_seen = false}), "recommend_vec")
    no_seen(db:neighbors("i1", 10, o), "neighbors")
    no_seen(db:walk({"i1"}, {k = 10, steps = 500, seen_by = "u"}), "walk")
    no_seen(db:counter_top("pop", 10, o), "counter_top")
    t.eq(ids(db:counter_top("pop", 3, {seen_by = "nobody"})), "i6,i5,i4", "unknown user: nothing left out")
    t.eq(ids(db:neighbors("i1", 10, {seen_by = "u", exclude = {"i3"}})), "", "with exclude")
end)

t.test("decayed counters", function()
    local db = recd.open(t.tmpdir())
    local c = db:counter("pop", 3600)
    t.eq(c.half_life, 3600)
    db:item_put("a"); db:item_put("b")
    db:counter_add("pop", "a", 10, 1000)
    t.near(db:counter_get("pop", "a", 1000 + 3600), 5, 1e-9, "half after one half-life")
    db:counter_add("pop", "b", 8, 1000 + 3600)
    t.eq(ids(db:counter_top("pop", 2, {ts = 1000 + 3600})), "b,a")
    t.eq(ids(db:counter_top("pop", 2, {ts = 1000 + 3600, exclude = {"b"}})), "a")
    t.eq(db:counter_get("pop", "zzz"), 0)
    t.eq(db:counter("pop", 1).half_life, 3600, "existing family keeps its half-life")
    t.eq(db:counter("none"), nil)
end)

t.test("kv holds any storable value", function()
    local db = recd.open(t.tmpdir())
    db:kv_put("arms", {a = {n = 3, s = 1.5}, list = {1, 2, 3}})
    local v = db:kv_get("arms")
    t.eq(v.a.n, 3)
    t.eq(v.list[3], 3)
    t.eq(db:kv_get("none"), nil)
    db:batch(function()
        db:kv_put("k", "v")
        t.eq(db:kv_get("k"), "v", "read your own write inside a batch")
        db:kv_delete("k")
        t.eq(db:kv_get("k"), nil, "deleted inside the batch")
    end)
    t.raises("invalid_params", db.kv_put, db, "", 1)
    t.raises("invalid_params", db.kv_put, db, "f", print)
end)

t.test("everything survives close and reopen", function()
    local dir = t.tmpdir()
    local db = recd.open(dir)
    db:batch(function()
        db:item_put("m1", {title = "One"}, {content = {1, 0}})
        db:item_put("m2", {title = "Two"}, {content = {0.8, 0.2}})
        db:item_put("m3", {title = "Three"}, {content = {0, 1}}, false)
        db:user_put(7, {name = "seven"})
        db:event{user = 7, item = "m1", type = "click", ts = 100}
        db:event{user = 7, item = "m2", type = "click", ts = 101}
        db:counter("pop", 0)
        db:counter_add("pop", "m1", 3, 100)
        db:event_weight("hover", 0.25)
        db:mf_update(7, "m1", 1, {dim = 8})
    end)
    local uvec = db:vector("user", 7, "mf")
    db:close()
    db = recd.open(dir)
    local st = db:stats()
    t.eq(st.items, 3)
    t.eq(st.users, 1)
    t.eq(st.events, 2)
    t.eq(db:item_get("m2").props.title, "Two")
    t.eq(db:item_get("m3").active, false)
    t.eq(db:user_get(7).props.name, "seven")
    t.eq(db:history(7)[1].item, "m2")
    t.eq(db:cooc("m1", "m2"), 2, "graph rebuilt from history")
    t.eq(db:counter_get("pop", "m1", 5000), 3)
    t.eq(db:event_weight("hover"), 0.25)
    local v = db:vector("user", 7, "mf")
    for i = 1, 8 do t.eq(v[i], uvec[i], "learned vector persisted") end
    t.eq(ids(db:similar("m1", 5)), "m2", "inactive m3 still left out")
    local s2 = db:event{user = 7, item = "m3", type = "view"}
    t.eq(s2, 3, "sequence continues after reopen")
end)

t.test("user_delete forgets the user everywhere", function()
    local dir = t.tmpdir()
    local db = recd.open(dir)
    db:batch(function()
        db:user_put("gone", {email = "x@example.org"}, {content = {1, 1}})
        db:user_put("stay", {})
        for i = 1, 5 do
            db:event{user = "gone", item = "i" .. i, type = "click", ts = i}
            db:event{user = "stay", item = "i" .. i, type = "view", ts = i}
        end
        db:mf_update("gone", "i1")
    end)
    t.truthy(db:cooc("i1", "i2") > 1)
    t.eq(db:user_delete("gone"), true)
    t.eq(db:user_delete("gone"), false, "second delete finds nothing")
    t.eq(db:user_get("gone"), nil)
    t.eq(#db:history("gone"), 0)
    t.eq(db:stats().events, 5, "their rows left the event log")
    t.eq(db:cooc("i1", "i2"), 1, "their co-occurrence taken back")
    t.eq(db:space("mf").users, 0, "their learned vector is gone")
    t.eq(db:space("content").users, 0)
    db:close()
    db = recd.open(dir)
    t.eq(db:user_get("gone"), nil)
    t.eq(db:stats().events, 5)
    t.eq(db:stats().users, 1)
    t.eq(db:cooc("i1", "i2"), 1)
    -- the id can come back as a new user with nothing of the old one
    db:event{user = "gone", item = "i9", type = "view", ts = 99}
    t.eq(#db:history("gone"), 1)
end)

t.test("item_delete", function()
    local db = recd.open(t.tmpdir())
    db:item_put("a", nil, {content = {1, 0}})
    db:item_put("b", nil, {content = {1, 0.1}})
    db:event{user = "u", item = "a", type = "click", ts = 1}
    db:event{user = "u", item = "b", type = "click", ts = 2}
    t.eq(db:item_delete("a"), true)
    t.eq(db:item_get("a"), nil)
    t.eq(#db:similar("b", 5), 0)
    t.eq(db:cooc("a", "b"), 0)
    t.eq(#db:neighbors("b", 5), 0)
    t.eq(#db:history("u"), 1)
end)

t.test("batch commits once and re-raises errors", function()
    local db = recd.open(t.tmpdir())
    local r1, r2 = db:batch(function(x) db:item_put("a") return x, 2 end, 1)
    t.eq(r1, 1)
    t.eq(r2, 2)
    local ok, err = pcall(db.batch, db, function()
        db:item_put("b")
        error("boom")
    end)
    t.eq(ok, false)
    t.truthy(tostring(err):find("boom"))
    t.truthy(db:item_get("b"), "writes before the error are kept")
    t.eq(db:stats().pending, 0)
end)

t.test("try returns the error name", function()
    local db = recd.open(t.tmpdir())
    local r, name, msg = recd.try(db.similar, db, "none")
    t.eq(r, nil)
    t.eq(name, "not_found")
    t.truthy(msg:find("none"))
    t.eq(recd.try(function() return 5 end), 5)
    local ok, e = pcall(db.similar, db, "none")
    t.eq(ok, false)
    t.truthy(tostring(e):find("^not_found: "), "error objects print as name: message")
end)

t.test("read-only open beside a writer refuses writes", function()
    local dir = t.tmpdir()
    local w = recd.open(dir)
    w:item_put("a", {n = 1})
    local r = recd.open(dir, {read_only = true})
    t.eq(r:item_get("a").props.n, 1)
    t.raises("read_only", r.item_put, r, "b")
    t.raises("read_only", r.event, r, {user = "u", item = "a", type = "view"})
    w:item_put("c", {n = 3})
    r:close()
    r = recd.open(dir, {read_only = true})
    t.eq(r:item_get("c").props.n, 3, "a new reader sees the writer's commits")
    t.raises("not_found", recd.open, t.tmpdir() .. "/missing", {read_only = true})
end)

t.test("a full map fails cleanly and keeps earlier data", function()
    local dir = t.tmpdir()
    local db = recd.open(dir, {map_size = 256 * 1024, map_max = 1024 * 1024})
    local blob = string.rep("x", 20000)
    local stored, err = 0, nil
    for i = 1, 200 do
        local ok, e = pcall(db.item_put, db, "i" .. i, {blob = blob})
        if not ok then err = e break end
        stored = i
    end
    t.truthy(err, "the map filled up")
    t.eq(err.name, "map_full")
    t.truthy(stored > 10, "the map grew before it filled (" .. stored .. " items)")
    t.truthy(db:stats().map_grows >= 1, "map grew")
    t.eq(db:item_get("i" .. (stored + 1)), nil, "the failed write left nothing")
    t.eq(db:item_get("i1").props.blob, blob, "earlier data intact")
    t.eq(db:stats().items, stored)
    db:close()
    db = recd.open(dir, {map_size = 256 * 1024, map_max = 1024 * 1024})
    t.eq(db:stats().items, stored)
    t.eq(db:item_get("i" .. stored).props.blob, blob)
end)

t.test("now, sample, shown: their input checked", function()
    local db = recd.open(t.tmpdir())
    db:item_put("a")
    db:item_put("b")
    t.truthy(math.abs(db:now() - os.time()) < 60, "a fresh folder is on the wall clock")
    t.raises("invalid_params", db.shown, db, {})
    t.raises("invalid_params", db.shown, db, nil)
    t.eq(next(db:shown("nobody")), nil)
    t.raises("out_of_range", db.sample, db, -1)
    local ok, err = pcall(db.sample, db, 2, "not a table") -- as every query's options
    t.truthy(not ok and tostring(err):find("table expected", 1, true), tostring(err))
    t.raises("invalid_params", db.sample, db, 2, {exclude = "a"})
    t.raises("invalid_params", db.sample, db, 2, {shown_by = {}})
    t.raises("invalid_params", db.sample, db, 2, {shown_by = "u", shown_min = 0})
    t.raises("invalid_params", db.sample, db, 2, {shown_by = "u", shown_min = "x"})
    t.eq(#db:sample(5, {exclude = {"a"}}), 1)
    t.eq(#db:sample(5, {shown_by = "u", shown_min = 1}), 2)
    db:close()
end)

t.test("the click model's methods refuse bad input with a clear error", function()
    local db = recd.open(t.tmpdir(), {no_sync = true})
    db:item_put("a", {category = "x"}, {content = {1, 0}})
    db:event{user = "u", item = "a", type = "click"}
    local function fails(pattern, fn, ...)
        local ok, err = pcall(fn, ...)
        t.truthy(not ok, "expected an error matching " .. pattern)
        t.truthy(tostring(err):find(pattern, 1, true), "got: " .. tostring(err))
    end
    -- no model in force
    local e = t.raises("not_found", db.click_predict, db, {user = "u"}, {{id = "a"}})
    t.truthy(e.message:find("no click model", 1, true), e.message)
    -- declarations that do not read
    e = t.raises("invalid_params", db.click_model, db, {features = {"colour"}})
    t.truthy(e.message:find("unknown feature 'colour'", 1, true), e.message)
    t.raises("invalid_params", db.click_model, db, {kind = "fm", k = 0, features = {"item"}})
    t.raises("invalid_params", db.click_model, db, {features = "item"})
    t.raises("invalid_params", db.click_model, db, {bits = 99, features = {"item"}})
    -- with a model: wrong types and missing fields
    t.eq(db:click_model{kind = "lr", features = {"item", "prop:category"}}, true)
    fails("table expected", db.click_predict, db, "u", {})
    fails("table expected", db.click_predict, db, {user = "u"}, 7)
    e = t.raises("invalid_params", db.click_predict, db, {}, {{id = "a"}})
    t.truthy(e.message:find("req.user", 1, true), e.message)
    local items = {{id = "a"}, {id = {}}, "junk", {id = "zzz"}}
    db:click_predict({user = "u"}, items)
    t.truthy(items[1].p_click ~= nil and items[2].p_click == nil and items[4].p_click == nil)
    -- profile and mark_shown
    t.raises("not_found", db.profile, db, "u", "nope")
    fails("n must be 1..10000", db.profile, db, "u", "content", 0)
    t.eq(db:profile("nobody", "content"), nil)
    t.raises("invalid_params", db.mark_shown, db, {}, {"a"})
    fails("table expected", db.mark_shown, db, "u", "a")
    t.eq(db:mark_shown("u", {"zzz", {id = "a"}}), true)
    t.eq(db:shown("u").a, 1.0)
    db:close()
end)

t.test("db:blend: the sources' lists rank-fused in C, as the same fusion in Lua", function()
    local db = recd.open(t.tmpdir(), {no_sync = true})
    for i = 1, 40 do
        local a = i * 0.37
        db:item_put("i" .. i, {category = "c" .. (i % 4)}, {content = {math.cos(a), math.sin(a), (i % 5) / 5}})
    end
    db:counter("pop", 3600)
    for i = 1, 40 do db:counter_add("pop", "i" .. i, (i * 7) % 13 + 1, 1000) end
    db:batch(function()
        for u = 1, 30 do
            for j = 0, 5 do
                db:event{user = "u" .. u, item = "i" .. ((u * 3 + j * 5) % 40 + 1), type = "click", ts = 100 + u * 10 + j}
            end
        end
    end)
    local me = "u7"
    local opts = {seen_by = me, exclude = {"i2"}, ts = 1000}
    -- the same fusion in Lua over the single-source methods
    local function fuse(acc, order, hits, w, why)
        for r, h in ipairs(hits) do
            local c = acc[h.id]
            if not c then
                c = {id = h.id, score = 0.0, best = 0.0, ord = #order + 1}
                acc[h.id] = c
                order[#order + 1] = c
            end
            local s = w / (10 + r - 1)
            c.score = c.score + s
            if s > c.best then c.best, c.why = s, why end
        end
    end
    local acc, order = {}, {}
    fuse(acc, order, db:neighbors("i5", 15, opts), 2.0, "cooc")
    fuse(acc, order, db:neighbors("i9", 15, opts), 1.0, "cooc")
    fuse(acc, order, db:topk("content", db:profile(me, "content", 4), 15, opts), 1.0, "content")
    fuse(acc, order, db:counter_top("pop", 15, opts), 0.3, "popular")
    table.sort(order, function(a, b)
        if a.score ~= b.score then return a.score > b.score end
        return a.ord < b.ord
    end)
    local got = db:blend({
        {"neighbors", item = "i5", w = 2.0, why = "cooc"},
        {kind = "neighbors", item = "i9", why = "cooc"},
        {"taste", user = me, space = "content", recent = 4, why = "content"},
        {"counter", name = "pop", ts = 1000, w = 0.3, why = "popular"},
        {"counter", name = "no such counter"},   -- adds nothing
        {"neighbors", item = "unknown item"},      -- adds nothing
        {"walk", seeds = {user = me}, w = 0},      -- not run
    }, 8, {k = 15, seen_by = me, exclude = {"i2"}})
    t.eq(#got, 8)
    for i = 1, 8 do
        t.eq(got[i].id, order[i].id, "rank " .. i)
        t.near(got[i].score, order[i].score, 1e-5, "score " .. i)
        t.eq(got[i].why, order[i].why, "why " .. i)
    end
    -- the history, exclude and seen_by hold for every source
    local hist = {}
    for _, h in ipairs(db:history(me, 100)) do hist[h.item] = true end
    local all = db:blend({{"sample", k = 40}, {"walk", seeds = {"i5", "i9"}, steps = 500},
                          {"similar", item = "i5"}, {"ease", user = me}}, 40, {seen_by = me, exclude = {"i2"}})
    t.truthy(#all > 0, "answered")
    local distinct = {}
    for _, h in ipairs(all) do
        t.truthy(not hist[h.id] and h.id ~= "i2", "left out: " .. h.id)
        t.truthy(not distinct[h.id], "once: " .. h.id)
        distinct[h.id] = true
    end
    -- shown_discount: a showing below shown_min discounts, one at or above
    -- it leaves the item out
    local base = db:blend({{"counter", name = "pop", ts = 1000}}, 3, {seen_by = me})
    db:mark_shown(me, {base[1].id})
    local w = db:shown(me)[base[1].id]
    local d = db:blend({{"counter", name = "pop", ts = 1000}}, 40,
                       {seen_by = me, shown_by = me, shown_min = w + 1, shown_discount = 0.5})
    local found
    for _, h in ipairs(d) do if h.id == base[1].id then found = h end end
    t.near(found.score, base[1].score * 0.5 ^ w, 1e-9, "discounted by 0.5^weight")
    d = db:blend({{"counter", name = "pop", ts = 1000}}, 40, {seen_by = me, shown_by = me, shown_min = w})
    for _, h in ipairs(d) do t.truthy(h.id ~= base[1].id, "shown at shown_min: left out") end
    -- bad input: clear errors
    t.raises("invalid_params", db.blend, db, {{"nope"}})
    t.raises("invalid_params", db.blend, db, {"neighbors"})
    t.raises("invalid_params", db.blend, db, {{"neighbors", item = "i1", w = 0 / 0}})
    t.raises("out_of_range", db.blend, db, {{"neighbors", item = "i1", k = -1}})
    t.raises("not_found", db.blend, db, {{"taste", user = me, space = "nope"}})
    t.raises("dimension_mismatch", db.blend, db, {{"topk", vector = {1, 0, 0, 0}}})
    t.raises("out_of_range", db.blend, db, {{"walk", seeds = {user = me}, restart = 2}})
    t.raises("invalid_params", db.blend, db, {{"walk", seeds = "x"}})
    t.raises("invalid_params", db.blend, db, {}, 5, {shown_discount = 0})
    t.eq(#db:blend({}, 5), 0, "no sources: nothing")
    db:close()
end)

t.test("db:click_rank: expected value, catalogue draws, keep, bad input", function()
    local db = recd.open(t.tmpdir(), {no_sync = true})
    for _, id in ipairs{"a", "b", "c", "d", "e", "f", "g"} do db:item_put(id, {category = "x"}) end
    db:event{user = "u", item = "a", type = "click"}
    t.raises("not_found", db.click_rank, db, {user = "u"}, {{id = "b"}})
    t.eq(db:click_model{kind = "lr", features = {"item"}}, true)
    -- an untrained model predicts 0.5 for all: the order is the list's,
    -- until what a conversion is worth tells the items apart
    db:counter("v_sum", 0)
    db:counter("v_cnt", 0)
    db:counter_add("v_sum", "d", 30)
    db:counter_add("v_cnt", "d", 1)
    db:counter_add("v_sum", "b", 1)
    db:counter_add("v_cnt", "b", 1)
    local list = {{id = "b", strategy = "s"}, {id = "c"}, {id = "zzz"}, {id = "d"}, "junk"}
    local out, learned = db:click_rank({user = "u"}, list)
    t.eq(learned, 0)
    t.eq(ids(out), "b,c,d,zzz", "no value: the list's order, unknown ids last")
    t.eq(out[5], "junk")
    t.eq(out[1], list[1], "the list's own tables")
    t.near(out[1].p_click, 0.5, 1e-9)
    t.near(out[1].score, 0.5 * (1 + 0.5), 1e-9, "p_click x (1 + p_conversion)")
    out = db:click_rank({user = "u"}, list, {value = {sum = "v_sum", count = "v_cnt", mean = 2, prior = 1}})
    t.eq(ids(out), "d,c,b,zzz", "the item whose conversions are worth most first")
    -- rel = (sum + prior mean) / (count + prior) / mean
    t.near(out[1].score, 0.5 * (1 + 0.5 * (30 + 2) / 2 / 2), 1e-9)
    t.near(out[3].score, 0.5 * (1 + 0.5 * (1 + 2) / 2 / 2), 1e-9)
    -- draws from the catalogue: never seen, excluded or listed; keep
    out = db:click_rank({user = "u", exclude = {"e"}}, {{id = "b"}}, {sample = 100, explore = 1})
    local got = {}
    for _, it in ipairs(out) do
        t.truthy(not got[it.id], "once: " .. it.id)
        got[it.id] = true
        t.truthy(it.p_click ~= nil and it.score ~= nil, "scored: " .. it.id)
    end
    t.eq(#out, 5, "b plus c, d, f, g")
    t.truthy(not got.a and not got.e and got.b and got.g, ids(out))
    t.eq(#db:click_rank({user = "u"}, {{id = "b"}}, {sample = 100, keep = 2}), 2)
    -- bad input
    t.raises("invalid_params", db.click_rank, db, {user = "u"}, {}, {explore = -1})
    t.raises("out_of_range", db.click_rank, db, {user = "u"}, {}, {sample = -1})
    t.raises("out_of_range", db.click_rank, db, {user = "u"}, {}, {keep = -1})
    t.raises("invalid_params", db.click_rank, db, {user = "u"}, {}, {value = 5})
    t.raises("not_found", db.click_rank, db, {user = "u"}, {}, {value = {sum = "nope", count = "v_cnt", mean = 1}})
    t.raises("invalid_params", db.click_rank, db, {}, {{id = "b"}})
    db:close()
end)

t.test("db:discount_shown: shown items discounted and re-ranked, the rest kept", function()
    local db = recd.open(t.tmpdir(), {no_sync = true})
    for _, id in ipairs{"a", "b", "c"} do db:item_put(id) end
    local list = {{id = "a", score = 3}, {id = "zzz", score = 2.5}, {id = "b", score = 2}, "junk", {id = "c"}}
    t.eq(db:discount_shown("u", list), list, "nothing shown: the same table")
    db:mark_shown("u", {"a"})
    local out = db:discount_shown("u", list, 0.25)
    t.truthy(out ~= list, "a new array")
    t.eq(#out, 5)
    t.eq(out[1].id, "zzz")
    t.eq(out[2].id, "b")
    t.eq(out[3].id, "a")
    t.near(out[3].score, 3 * 0.25, 1e-9, "score x factor^weight")
    t.eq(out[3].fatigue, 1.0)
    t.eq(out[4], "junk", "entries without a score count 0, in list order")
    t.eq(out[5].id, "c")
    t.raises("invalid_params", db.discount_shown, db, "u", list, 0)
    t.raises("invalid_params", db.discount_shown, db, "u", list, 1.5)
    t.raises("invalid_params", db.discount_shown, db, {}, list)
    local ok, err = pcall(db.discount_shown, db, "u", "x")
    t.truthy(not ok and tostring(err):find("table expected", 1, true), tostring(err))
    db:close()
end)

t.test("large spaces: the approximate index, its knobs, exact and probe", function()
    local db = recd.open(t.tmpdir())
    -- 8 directions in 8 dims, 60 items around each (small noise).
    local rnd = 12345
    local function noise()
        rnd = (rnd * 1103515245 + 12345) % 2147483648
        return (rnd / 2147483648 - 0.5) * 0.1
    end
    db:batch(function()
        for i = 1, 480 do
            local v = {}
            for d = 1, 8 do v[d] = (d == (i % 8) + 1 and 1 or 0) + noise() end
            db:item_put("i" .. i, nil, {content = v})
        end
        db:event{user = "u", item = "i8", type = "click", ts = 1}
    end)
    local a = db:space_ann("content")
    t.eq(a.min_rows, 32768)
    t.eq(a.probe, 12)
    t.eq(a.lists, 0, "no index below min_rows")
    local q = {1, 0, 0, 0, 0, 0, 0, 0}
    local exact = db:topk("content", q, 30, {exact = true})
    t.eq(db:space_ann("content").lists, 0, "an exact scan makes none")
    a = db:space_ann("content", {min_rows = 100, probe = 3, build = true})
    t.eq(a.min_rows, 100)
    t.eq(a.probe, 3)
    t.eq(a.lists, 22, "round(sqrt(480)) lists")
    t.eq(a.indexed, 480)
    t.eq(a.trainings, 1)
    t.eq(a.training, false)
    t.truthy(a.probe_need >= 1 and a.probe_need <= 4, "self-check: " .. a.probe_need)
    -- The direction's 60 items, as the exact scan ranks them.
    local approx = db:topk("content", q, 30)
    t.eq(ids(approx), ids(exact), "index answer")
    for _, h in ipairs(approx) do
        t.eq(tonumber(h.id:sub(2)) % 8, 0, "item of the direction " .. h.id)
    end
    t.eq(ids(db:topk("content", q, 30, {probe = 22})), ids(exact), "every list probed")
    -- Filters hold through the index, and k hits come back.
    local hits = db:topk("content", q, 30, {seen_by = "u", exclude = {"i16"}})
    t.eq(#hits, 30)
    for _, h in ipairs(hits) do
        t.truthy(h.id ~= "i8" and h.id ~= "i16", "filtered " .. h.id)
    end
    -- A new item goes to its list at once.
    db:item_put("new", nil, {content = {2, 0, 0, 0, 0, 0, 0, 0}})
    t.eq(db:topk("content", q, 1)[1].id, "new")
    t.eq(db:space_ann("content").indexed, 481)
    db:item_delete("new")
    t.truthy(db:topk("content", q, 1)[1].id ~= "new", "deleted")
    t.eq(db:space_ann("content").indexed, 480)
    t.raises("out_of_range", db.topk, db, "content", q, 3, {probe = -1})
    t.raises("out_of_range", db.space_ann, db, "content", {probe = 0})
    t.raises("out_of_range", db.space_ann, db, "content", {min_rows = 0})
    t.raises("not_found", db.space_ann, db, "nope")
    db:close()
end)

t.done()
