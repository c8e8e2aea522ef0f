"""The HTTP API (FastAPI): routes, authentication, problem+json errors.

``app`` builds the app (``create_app``); ``routes`` holds one module per resource; ``deps`` what
the routes depend on (app state, keys, parameters); ``schemas`` the bodies; ``errors`` and
``problems`` the error responses; ``middleware`` metrics and the body limit; ``keys`` API keys;
``projector`` the embedded projector thread."""
