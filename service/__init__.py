"""An example FastAPI service built on the data layer: run it with `uvicorn service.app:app`."""
