-- demo_data.lua - a small generated catalogue: 240 items in 8 genres with
-- content vectors, 60 users who each prefer two genres, 2,400 interactions
-- over the last two days, a "popularity" counter and online MF vectors.
--
-- Loaded once into an empty data folder by `recd serve --init` (make run)
-- and by examples/demo.lua. Expects a global `db` (a recd database).
local genres = {"comedy", "drama", "action", "horror", "romance", "scifi", "docs", "kids"}
math.randomseed(7)                    -- the same demo data on every machine
local function rand(n) return n and math.random(n) or math.random() end

if db:stats().items == 0 then
    io.write("loading demo data ... ")
    db:batch(function()
        for i = 1, 240 do
            local g = (i - 1) % #genres + 1
            local v = {}
            for d = 1, #genres do v[d] = (d == g and 1 or 0) + (rand() - 0.5) * 0.3 end
            db:item_put("m" .. i, {title = genres[g] .. " #" .. i, genre = genres[g]},
                        {content = v})
        end
        db:counter("popularity", 7 * 24 * 3600)
        -- 2,400 clicks and purchases a minute or two apart, the last one
        -- now: the server's clock (event time) then stands at the wall clock
        local evs, t = {}, 0
        for u = 1, 60 do
            local likes = {(u - 1) % #genres + 1, (u * 3) % #genres + 1}
            for _ = 1, 40 do
                local g = likes[rand(2)]
                local item = "m" .. ((rand(30) - 1) * #genres + g)
                local typ = rand() < 0.2 and "purchase" or "click"
                t = t + rand(120)
                evs[#evs + 1] = {user = "u" .. u, item = item, type = typ, t = t}
            end
        end
        local start = os.time() - t
        for _, e in ipairs(evs) do
            local ts = start + e.t
            local _, w = db:event{user = e.user, item = e.item, type = e.type, ts = ts}
            db:counter_add("popularity", e.item, w, ts)
        end
        -- a few passes of online MF over everyone's history
        for _ = 1, 15 do
            for u = 1, 60 do
                for _, h in ipairs(db:history("u" .. u, 100)) do
                    db:mf_update("u" .. u, h.item, h.weight, {dim = 16})
                end
            end
        end
    end)
    print("done")
else
    local st = db:stats()
    print(string.format("demo data not loaded: the folder holds %d items and %d users already",
                        st.items, st.users))
end
