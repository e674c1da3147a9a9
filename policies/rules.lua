-- rules.lua - business filters from the request context.
--
-- req.context fields (all optional; no rule given: the list is untouched):
--   category          string or list: keep items in any of these
--   exclude_category  string or list: drop items in any of these
--   min_price         number: keep items with props.price >= min_price
--   max_price         number: keep items with props.price <= max_price
--   only_active       true: drop inactive items (strategies already skip
--                     them; this guards candidates from elsewhere)
--   strict            true: an item lacking the property a rule needs
--                     fails that rule (default: it passes)
-- An item's categories are props.category, props.categories, props.genre
-- and props.genres, each a string or a list of strings, compared
-- case-insensitively. A price that is not
-- a number counts as missing.
--
-- Cost: one db:item_get per candidate when a rule is given (it decodes
-- the item's properties and copies its vectors), O(#items).
-- Knobs: none beyond the context fields.

local FIELDS = {"category", "categories", "genre", "genres"}

local function set_of(v)
    if v == nil then return nil end
    local s = {}
    if type(v) == "table" then
        for _, x in ipairs(v) do s[string.lower(tostring(x))] = true end
    else
        s[string.lower(tostring(v))] = true
    end
    return s
end

-- The item's categories as a list of lower-case strings, or nil.
local function categories(props)
    local out
    for _, f in ipairs(FIELDS) do
        local v = props[f]
        if type(v) == "string" then
            out = out or {}
            out[#out + 1] = string.lower(v)
        elseif type(v) == "table" then
            for _, x in ipairs(v) do
                if type(x) == "string" then
                    out = out or {}
                    out[#out + 1] = string.lower(x)
                end
            end
        end
    end
    return out
end

local function any_in(list, set)
    for _, c in ipairs(list) do
        if set[c] then return true end
    end
    return false
end

local M = {}

function M.rerank(req, items)
    local ctx = req.context
    if type(ctx) ~= "table" then return items end
    local include, exclude = set_of(ctx.category), set_of(ctx.exclude_category)
    local min_p, max_p = tonumber(ctx.min_price), tonumber(ctx.max_price)
    local only_active, strict = ctx.only_active == true, ctx.strict == true
    if not (include or exclude or min_p or max_p or only_active) then return items end

    local db = req.rec or rec
    local out = {}
    for _, it in ipairs(items) do
        local item = db:item_get(it.id)
        local keep = item ~= nil
        if keep and only_active and not item.active then keep = false end
        local props = item and type(item.props) == "table" and item.props or {}
        if keep and (include or exclude) then
            local cats = categories(props)
            if cats then
                if include and not any_in(cats, include) then keep = false end
                if exclude and any_in(cats, exclude) then keep = false end
            elseif include and strict then
                keep = false
            end
        end
        if keep and (min_p or max_p) then
            local price = props.price
            if type(price) == "number" then
                if min_p and price < min_p then keep = false end
                if max_p and price > max_p then keep = false end
            elseif strict then
                keep = false
            end
        end
        if keep then out[#out + 1] = it end
    end
    return out
end

return M
