"""sessionstore: an event-sourced session store for conversational AI agents."""
