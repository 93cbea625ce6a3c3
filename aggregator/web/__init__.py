"""The HTTP face: the FastAPI app factory (:mod:`.app`), problem+json errors, the body-size
middleware, authentication dependencies."""
