-- fatigue.lua - stop pushing what a user keeps ignoring.
--
-- Per user, kv key "fatigue:<user>" (see below) holds a short list of
-- {id = item, n = times shown, ts = last shown}. rerank counts the items
-- it returns in the shown slots (the first req.n; not for previews, whose
-- req.record is false); an item shown THRESHOLD
-- times or more without engagement is demoted: it moves below every
-- non-fatigued item (the more shown, the lower), and carries
-- fatigue = <times shown>. Any positive event on the item (on_event)
-- clears its entry; negative feedback (weight < 0: skip, dislike) counts as
-- THRESHOLD showings at once; weight 0 (neutral types) changes nothing.
-- Entries not shown for WINDOW seconds are forgotten and the list keeps
-- at most MAX_ENTRIES (the least recently shown go first), so the value
-- stays small. The key is "fatigue:s:<id>" for string user ids and
-- "fatigue:i:<id>" for integer ones (they are different users).
--
-- Cost: one db:kv_get and one db:kv_put per rerank and per event that
-- touches a tracked item; O(MAX_ENTRIES + #items) Lua work.
-- Knobs: THRESHOLD, WINDOW, MAX_ENTRIES.
local THRESHOLD = 3
local WINDOW = 3 * 86400
local MAX_ENTRIES = 100
local PREFIX = "fatigue:"

local function key(user)
    local k = PREFIX .. (math.type(user) == "integer" and ("i:" .. user) or ("s:" .. tostring(user)))
    if #k > 255 then k = k:sub(1, 255) end
    return k
end

-- Read the user's entries, dropping stale ones; returns list and index.
local function load(db, user, now)
    local list = db:kv_get(key(user))
    local out, index = {}, {}
    if type(list) == "table" then
        for _, e in ipairs(list) do
            if type(e) == "table" and e.id ~= nil and type(e.n) == "number" and
               type(e.ts) == "number" and now - e.ts < WINDOW and not index[e.id] then
                out[#out + 1] = e
                index[e.id] = e
            end
        end
    end
    return out, index
end

local function store(db, user, list)
    if #list > MAX_ENTRIES then
        table.sort(list, function(a, b) return a.ts > b.ts end)
        for i = #list, MAX_ENTRIES + 1, -1 do list[i] = nil end
    end
    if #list == 0 then
        db:kv_delete(key(user))
    else
        db:kv_put(key(user), list)
    end
end

local M = {}

function M.rerank(req, items)
    if req.user == nil or #items == 0 then return items end
    local db = req.rec or rec
    local now = req.now or os.time()
    local list, index = load(db, req.user, now)

    local fresh, tired = {}, {}
    for i, it in ipairs(items) do
        local e = index[it.id]
        if e and e.n >= THRESHOLD then
            it.fatigue = e.n
            tired[#tired + 1] = {it = it, n = e.n, i = i}
        else
            fresh[#fresh + 1] = it
        end
    end
    table.sort(tired, function(a, b)
        if a.n ~= b.n then return a.n < b.n end
        return a.i < b.i
    end)
    local out = fresh
    for _, t in ipairs(tired) do out[#out + 1] = t.it end
    -- a preview (rec.recommend with record = false) is not shown: no count
    if req.record == false then return out end

    local shown = math.min(math.tointeger(req.n) or #out, #out)
    for i = 1, shown do
        local id = out[i].id
        local e = index[id]
        if e then
            e.n = e.n + 1
            e.ts = now
        else
            e = {id = id, n = 1, ts = now}
            index[id] = e
            list[#list + 1] = e
        end
    end
    store(db, req.user, list)
    return out
end

function M.on_event(ev)
    if ev.user == nil or ev.item == nil or type(ev.weight) ~= "number" then return end
    local now = ev.ts or os.time()
    local list, index = load(rec, ev.user, now)
    local e = index[ev.item]
    if ev.weight == 0 then return end -- neutral types (impressions, hovers)
    if ev.weight > 0 then
        if not e then return end -- nothing tracked: no write
        for i = #list, 1, -1 do
            if list[i].id == ev.item then table.remove(list, i) end
        end
    else
        if e then
            e.n = math.max(e.n, THRESHOLD)
            e.ts = now
        else
            list[#list + 1] = {id = ev.item, n = THRESHOLD, ts = now}
        end
    end
    store(rec, ev.user, list)
end

-- user.delete: forget what this policy keeps about the user.
function M.on_forget(user)
    rec:kv_delete(key(user))
end

return M
