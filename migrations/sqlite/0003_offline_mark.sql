-- The offline mark survives its delivery: a connect reads it and only a
-- completed replay turns it to online (a drop mid-replay keeps it), and a
-- user who never had a row has never connected.
ALTER TABLE offline_users ADD COLUMN online INTEGER NOT NULL DEFAULT 0;
