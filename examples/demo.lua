-- demo.lua - a small generated catalogue, run through the recd engine.
--
--   recd lua examples/demo.lua [DATA_DIR]
--
-- DATA_DIR defaults to a new temporary folder (its name is printed), never
-- to the server's ./data: the tour writes clicks. (`make run` loads the
-- same catalogue into ./data with examples/demo_data.lua, not this file.)
-- Builds 240 items in 8 genres with content vectors, 60 users who each
-- prefer two genres, and a few thousand interactions; then shows similar
-- items, co-occurrence neighbours, walks, online MF recommendations, and
-- how a user's recommendations move after a few clicks.
local recd = require "recd"

local dir = arg and arg[1]
if not dir then
    local tmp = os.tmpname() -- a new file: the folder goes beside it
    os.remove(tmp)
    dir = tmp .. "-recd-demo"
    print("data folder: " .. dir)
end
local db = recd.open(dir)
local genres = {"comedy", "drama", "action", "horror", "romance", "scifi", "docs", "kids"}

local function show(title, hits)
    print(title)
    for i, h in ipairs(hits) do
        local it = db:item_get(h.id)
        local name = it and it.props.title or tostring(h.id)
        print(string.format("  %2d. %-24s %8.3f", i, name, h.score))
    end
end

if db:stats().items == 0 then
    _G.db = db
    dofile((arg and arg[0] or "examples/demo.lua"):gsub("demo%.lua$", "demo_data.lua"))
end

local st = db:stats()
print(string.format("%d items, %d users, %d events, kernels: %s",
                    st.items, st.users, st.events, st.isa))

local top = db:counter_top("popularity", 1)[1].id
local title = db:item_get(top).props.title
show("\nmost popular now:", db:counter_top("popularity", 5))
show("\nitems like " .. title .. " by content vector:", db:similar(top, 5))
show("\nclicked or bought together with " .. title .. ":", db:neighbors(top, 5))
show("\nrandom walks from user u1's history:", db:walk({user = "u1"}, {k = 5}))
show("\nonline MF recommendations for u1:", db:recommend_vec("u1", 5))

print("\nu1 now clicks five scifi titles ...")
db:batch(function()
    for i = 1, 5 do
        local item = "m" .. (i * #genres + 6)
        local _, w = db:event{user = "u1", item = item, type = "click"}
        for _ = 1, 10 do db:mf_update("u1", item, w) end
    end
end)
show("online MF recommendations for u1 after the clicks:", db:recommend_vec("u1", 5))
db:close()
