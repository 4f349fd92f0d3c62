"""Text embeddings shared by mining, the context tree and API synthesis."""
