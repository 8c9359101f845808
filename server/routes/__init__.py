"""Thin FastAPI routers."""
