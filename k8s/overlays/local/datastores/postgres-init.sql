-- Runs once, on an empty data directory: MLflow gets a database of its own (its Alembic version table would
-- collide with P-ZONE's in one database). P-ZONE's own database (POSTGRES_DB) is created by the image.
CREATE DATABASE mlflow;
