"""The fleet server: MQTT ingest, storage, API, dashboard, background jobs."""
