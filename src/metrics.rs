//! Metrics and health: Prometheus text exposition, `/healthz`, `/readyz` (SPEC §10).
