-- ials.lua - implicit ALS (Hu, Koren & Volinsky 2008) kept fresh per click.
--
-- The server trains item and user factors on every positive interaction
-- in a background worker (every 5 minutes while events come in, or on
-- demand with the model.train method) and installs them in the "ials"
-- vector space. Between trainings, each positive event re-solves that
-- user's vector in closed form against the current item factors (fold-in),
-- so a batch-quality model still reacts to every click.
--
-- Cost: O(1) per positive event on the loop thread: the fold-in is owed,
-- once per user however many events, and solved by whatever reads the
-- user's vector first, or by a worker thread while something reads the
-- space (a space nobody reads pays no solve): O(n^2 f + n^3) for a user
-- with n < f distinct items at f factors (O(n f^2 + f^3) from n = f on).
-- Nothing happens until a first training has installed a model.
-- Knobs: SPACE (the space the server trains: model.train {space = ...}).
local SPACE = "ials"

local M = {}

function M.on_events(batch)
    rec:ials_fold_in(batch, SPACE)
end

return M
