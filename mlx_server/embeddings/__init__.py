"""Embedding models: loading (encoders through mlx-embeddings, decoders through mlx-lm),
pooling, and a batching engine on its own thread. No HTTP here."""
