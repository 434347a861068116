"""P-ZONE data pipeline stages: snapshot, prepare, register."""
