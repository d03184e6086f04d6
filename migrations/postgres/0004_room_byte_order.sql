-- Room names compare byte by byte, whatever the database's collation. Reading
-- the users' rooms at start is a range of the (room, seq) key, `room >= 'user:'
-- AND room < 'user;'`, which means "starts with user:" only in byte order:
-- under a linguistic collation (en_US, ICU) punctuation sorts apart, the range
-- found nothing, and every user then counted as having nothing queued.
ALTER TABLE event_rooms ALTER COLUMN room TYPE TEXT COLLATE "C";
