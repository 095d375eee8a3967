"""Reusable conformance suites: what every implementation of an interface must do.

``database.DatabaseConnectorSuite`` runs against a live front-end database of any dialect;
``database.DialectSQLSuite`` checks what a dialect compiles, without a server (so Oracle runs
it too). ``tests/test_conformance_databases.py`` parametrises both over the dialects.
"""
