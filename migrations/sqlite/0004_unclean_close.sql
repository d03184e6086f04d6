-- Set while a process running with synchronous=normal has the log open, and
-- cleared when it closes it: found set at start-up, the last commits may have
-- been lost to a power cut, so the log takes a new epoch (see SqliteStore::migrate).
ALTER TABLE log_meta ADD COLUMN open_unclean INTEGER NOT NULL DEFAULT 0;
