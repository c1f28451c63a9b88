"""Data sources: manifests, the synthetic ru/en speech corpus, webinar synthesis."""
