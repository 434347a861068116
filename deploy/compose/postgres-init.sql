-- Run once by the postgres image on an empty data volume (/docker-entrypoint-initdb.d): MLflow's own database,
-- next to the platform's (POSTGRES_DB), owned by the same user. The platform's tables come from `pzone db upgrade`.
CREATE DATABASE mlflow;
