"""The HTTP layer (Flask): app factory, routes, request intake, auth, CORS and the error boundary."""
