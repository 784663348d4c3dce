-- Retention pruning (`records`) deletes reports by age, oldest first, in batches.
CREATE INDEX reports_by_at ON reports (at, id);
