-- Each device numbers its reports (1, 2, 3, ...) and remembers the last number it gave out, so
-- that trimming a device's reports to its newest N deletes `seq <= newest - N`: one index range
-- that holds only the rows to delete, instead of walking the device's N newest reports to find
-- where to cut.
ALTER TABLE devices ADD COLUMN reports_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE reports ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
UPDATE reports SET seq = n.seq
    FROM (SELECT id, row_number() OVER (PARTITION BY device_id ORDER BY id) AS seq FROM reports) n
    WHERE reports.id = n.id;
UPDATE devices SET reports_seq = m.seq
    FROM (SELECT device_id, MAX(seq) AS seq FROM reports GROUP BY device_id) m
    WHERE devices.id = m.device_id;
DROP INDEX reports_by_device;
CREATE UNIQUE INDEX reports_by_device ON reports (device_id, seq);
