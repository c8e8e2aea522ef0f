"""Everything that touches I/O: storage backends, CLI, settings and the composition root."""
