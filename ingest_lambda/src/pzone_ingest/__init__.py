"""P-ZONE telemetry ingest: the Lambda handler (``pzone_ingest.handler.handler``) and the MQTT worker."""
