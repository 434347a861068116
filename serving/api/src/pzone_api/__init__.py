"""P-ZONE API: photo intake straight to object storage, users and sessions, history and the dashboard."""
