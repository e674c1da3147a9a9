-- ials.lua - implicit ALS (Hu, Koren & Volinsky 2008) kept fresh per click.
--
-- The server trains item and user factors on every positive interaction
-- in a background worker (every 5 minutes while events come in, or on
-- demand with the model.train method) and installs them in the "ials"
-- vector space. Between trainings, each positive event re-solves that
-- user's vector in closed form against the current item factors (fold-in),
-- so a batch-quality model still reacts to every click.
--
-- Cost: one fold-in per positive event, O(n f^2 + f^3) for a user with n
-- distinct items at f factors (about 15 us at f = 64, n = 50). Nothing
-- happens until a first training has installed a model.
-- Knobs: SPACE (the space the server trains: model.train {space = ...}).
local SPACE = "ials"

local M = {}

function M.on_event(ev)
    if ev.weight > 0 then
        rec:ials_fold_in(ev.user, SPACE)
    end
end

return M
