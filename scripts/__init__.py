"""Local services for the demo and the end-to-end tests (a real Label Studio, the backend under gunicorn)."""
