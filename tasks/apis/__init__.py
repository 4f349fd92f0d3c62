"""The API pool: synthesis from the context tree, import of others' tool lists, near-duplicates, schema validity."""
