"""Results: the store of run records and what a record says about its provenance."""
