"""The exchange engine: catalog, metadata store, pipeline steps and the CLI."""
