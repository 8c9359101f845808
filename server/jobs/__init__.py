"""Video jobs: the store interface, its SQLite implementation, and the runner."""
