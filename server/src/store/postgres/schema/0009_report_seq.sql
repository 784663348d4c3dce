-- Each device numbers its reports (1, 2, 3, ...) and remembers the last number it gave out, so
-- that trimming a device's reports to its newest N deletes `seq <= newest - N`: one index range
-- that holds only the rows to delete, instead of walking the device's N newest reports to find
-- where to cut.
-- `reports_trimmed`: every number up to it is deleted, so the next trim's range starts above
-- it and never walks the index entries of reports deleted before (dead until vacuumed).
ALTER TABLE devices ADD COLUMN reports_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN reports_trimmed BIGINT NOT NULL DEFAULT 0;
ALTER TABLE reports ADD COLUMN seq BIGINT;
UPDATE reports r SET seq = n.seq
    FROM (SELECT id, row_number() OVER (PARTITION BY device_id ORDER BY id) AS seq FROM reports) n
    WHERE r.id = n.id;
ALTER TABLE reports ALTER COLUMN seq SET NOT NULL;
UPDATE devices d SET reports_seq = m.seq
    FROM (SELECT device_id, MAX(seq) AS seq FROM reports GROUP BY device_id) m
    WHERE d.id = m.device_id;
DROP INDEX reports_by_device;
CREATE UNIQUE INDEX reports_by_device ON reports (device_id, seq);
-- Every check-in rewrites its device's row (last seen, version, state, report number), none of
-- them indexed: free room in each page lets PostgreSQL write the new version beside the old
-- one (a heap-only update, no new index entry) and reclaim the old one in place.
ALTER TABLE devices SET (fillfactor = 50);
