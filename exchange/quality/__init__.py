"""Quality services over the metadata store: quarantine index, tickets, error reports,
scores, and the Great Expectations export and report. The rules themselves live in the
top-level ``quality`` package and see Arrow data only."""
