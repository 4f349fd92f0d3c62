"""Run storage on local disk or object storage: staging, promotion, the latest pointer."""
