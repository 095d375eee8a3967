"""The embedded demo: a provider and two requesters on SQLite, a full then an incremental run."""
