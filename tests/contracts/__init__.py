"""Backend-neutral behaviour, subclassed once per backend."""
