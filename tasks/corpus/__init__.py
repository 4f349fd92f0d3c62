"""Reading corpora and mining their documents for API-relevant content (ToolACE's pretraining-document mining)."""
